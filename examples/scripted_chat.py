"""A scripted multi-turn chat through the CLI, the way a person would type it: messages and dial changes.

    python examples/scripted_chat.py [MODEL.gguf] [--threads N]
"""

import argparse
import subprocess
import sys

SCRIPT = """\
Hello! Can you tell me what you are?
/threshold human 0.05
Are you a real person with feelings?
/policy
/rule natural
Thanks, that is all.
/quit
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model", nargs="?", help="GGUF path (default: the embedded default model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    command = [sys.executable, "-m", "refusal_edge.cli", "chat", *([args.model] if args.model else []),
               "--threads", str(args.threads), "--ctx", "1024", "--max-tokens", "40", "--temperature", "0"]
    # On a pipe, chat reads one message (or /command) per line and echoes each message back.
    done = subprocess.run(command, input=SCRIPT, text=True, capture_output=True)
    print(done.stdout, end="")
    if done.returncode:
        print(done.stderr, file=sys.stderr)
    sys.exit(done.returncode)


if __name__ == "__main__":
    main()

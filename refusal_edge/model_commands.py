"""`pull`, `list`, `rm`, `show`: the models on this machine, by name (catalog.py; files from the hub: hub.py)."""

from __future__ import annotations

import json

import click

from . import catalog, hub
from .errors import ModelLoadError, RefusalEdgeError
from .files import human_size


@click.command()
@click.argument("spec", metavar="OWNER/REPO[/FILE.gguf]")
@click.option("--json", "as_json", is_flag=True, help="Print the pulled model's entry as JSON.")
def pull(spec, as_json):
    """Fetch a refusal-token GGUF from the Hugging Face hub into its cache, and check it is one.

    Without FILE, the repository's one GGUF (a repository with several asks for a choice). A file without refusal
    metadata is refused (and removed, if this pull downloaded it). With HF_HUB_OFFLINE=1 only the cache is used;
    HF_ENDPOINT names another hub, HF_TOKEN a private repository's key.

    \b
    Examples:
      refusal-edge pull someone/smollm2-refusal-GGUF
      refusal-edge pull someone/smollm2-refusal-GGUF/model.Q8_0.gguf
    """
    file = catalog.hub_file(spec)
    if file is None:
        repo = catalog.hub_repo(spec)
        if repo is None:
            raise click.UsageError(f"{spec!r} is not OWNER/REPO or OWNER/REPO/FILE.gguf")
        file = hub.HubFile(repo, _only_gguf(repo))
    path, downloaded = hub.fetch(file, refresh=True)
    try:
        entry = catalog.checked_entry(path, str(file))
    except RefusalEdgeError as exc:  # no refusal metadata, or not a readable GGUF
        if downloaded:
            hub.remove_cached(path)
        raise ModelLoadError(f"{file}: {exc}" + (" (removed)" if downloaded else "")) from None
    if as_json:
        click.echo(json.dumps(entry.to_dict(), ensure_ascii=False))
    else:
        click.echo(f"pulled {entry.name} ({human_size(entry.size_bytes)}): refusal-edge chat {entry.name}")


def _only_gguf(repo: str) -> str:
    files = hub.repo_ggufs(repo)
    if len(files) == 1:
        return files[0]
    if not files:
        raise ModelLoadError(f"{repo} holds no GGUF file" + (" in the cache (HF_HUB_OFFLINE is set)" if hub.offline()
                                                             else ""))
    shown = ", ".join(files[:8]) + (f" and {len(files) - 8} more" if len(files) > 8 else "")
    raise ModelLoadError(f"{repo} holds {len(files)} GGUF files ({shown}): name one, e.g. "
                         f"refusal-edge pull {repo}/{files[0]}")


@click.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array: name, source, path, title, quantization, "
                                                      "size_bytes, default.")
def list_models(as_json):
    """The refusal-token models on this machine: the default model and those in the Hugging Face cache.

    Every NAME works wherever a model goes (chat NAME, serve NAME, -m NAME, refusal_edge.load("NAME")); so does
    "default", the model used when none is given ($REFUSAL_EDGE_MODEL, else the embedded default model).
    """
    entries = catalog.entries()
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], ensure_ascii=False, indent=2))
        return
    if not entries:
        click.echo("no models yet: the default model is built on first use (refusal-edge chat), "
                   "refusal-edge pull OWNER/REPO fetches one")
        return
    width = max(len(e.name) for e in entries)
    click.echo(f"{'NAME':<{width}}  {'QUANT':<7} {'SIZE':>9}  SOURCE")
    for e in entries:
        mark = "  (default)" if e.default else ""
        click.echo(f"{e.name:<{width}}  {e.quantization:<7} {human_size(e.size_bytes):>9}  {e.source}{mark}")


@click.command()
@click.argument("name")
def rm(name):
    """Delete a model from the Hugging Face cache (or the built default model, which is rebuilt on next use)."""
    entry = _entry(name)
    if entry.source == catalog.EMBEDDED:
        entry.path.unlink()
    elif catalog.hub_file(entry.source) is not None:
        hub.remove_cached(entry.path)
    else:
        raise ModelLoadError(f"{entry.name} is {entry.path}, named by ${catalog.MODEL_ENV}: not in a cache; "
                             "delete the file yourself")
    click.echo(f"removed {entry.name} ({human_size(entry.size_bytes)})")


@click.command()
@click.argument("name", default=catalog.DEFAULT_NAME)
@click.option("--json", "as_json", is_flag=True, help="The entry and the file's refusal metadata, as JSON.")
def show(name, as_json):
    """A model's entry (name, source, path) and its refusal metadata, as `inspect` shows it."""
    from .commands import print_description
    from .inspection import describe

    entry = _entry(name)
    info = describe(entry.path)
    if as_json:
        click.echo(json.dumps({**entry.to_dict(), "metadata": info}, ensure_ascii=False, indent=2))
        return
    click.echo(f"{'model':<18} {entry.name}" + ("  (default)" if entry.default else ""))
    click.echo(f"{'source':<18} {entry.source}")
    print_description(info)


def _entry(name: str) -> catalog.Entry:
    if name == catalog.DEFAULT_NAME:
        default = next((e for e in catalog.entries() if e.default), None)
        if default is None:
            raise ModelLoadError("the default model is not built or fetched yet: it is on first use "
                                 "(refusal-edge chat)")
        return default
    return catalog.find(name)

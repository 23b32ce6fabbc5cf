"""Model commands, like Ollama's: `stack serve`, `create`, `list`, `show`, `cp`, `rm`.

All but `serve` talk to `OLLAMA_HOST` through the public API only (`toolchain.client`), so they
manage a real Ollama as well as `stack serve`. Results go to stdout, progress to stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer

from toolchain.cli import app
from toolchain.cli._table import human_bytes, human_number, human_time, table
from toolchain.client import Client
from toolchain.digests import file_digest
from toolchain.errors import APIError, CorralError


def _err(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@app.command("serve")
def serve(
    env: bool = typer.Option(False, "--env", help="List the environment variables the server reads, and exit."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Start with this stack's runtime settings."),
    apply: bool = typer.Option(False, "--apply", help="Apply the stack's models once the server answers."),
) -> None:
    """Start the Ollama-compatible model server.

    Listens on OLLAMA_HOST (default 127.0.0.1:11434) and serves the store in OLLAMA_MODELS
    (default ~/.ollama/models); `stack serve --env` lists every variable.
    """
    if env:
        from server.config import describe  # lazy: the toolchain never imports the server otherwise

        for name, text in describe():
            print(f"      {name:<27}   {text}")
        return
    import os

    from server.serve import run
    from toolchain.stack.serving import prepare_serve

    prepare_serve(str(file) if file else None, apply, os.environ, _err)  # type: ignore[arg-type]

    run()


@app.command("create")
def create(
    model: str = typer.Argument(..., help="Name of the model to create."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Modelfile (default ./Modelfile)."),
    quantize: Optional[str] = typer.Option(None, "--quantize", "-q", help="Quantize the model (e.g. q4_K_M)."),
) -> None:
    """Create a model from a Modelfile (local GGUF files are uploaded as blobs)."""
    from toolchain import modelfile as mf

    if file is None and not Path("Modelfile").exists():
        text, base = "FROM .", Path.cwd()
    else:
        path = file or Path("Modelfile")
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise CorralError(f"open {path}: {exc.strerror or exc}") from None
        base = path.resolve().parent
    req = mf.to_create_request(mf.parse(text), base_dir=str(base))
    for warning in req.warnings:
        _err(f"Warning: {warning}")
    with Client() as client:
        files = _upload(client, req.model_files)
        adapters = _upload(client, req.adapter_files)
        body: dict[str, Any] = req.body(model=model, files=files or None, adapters=adapters or None)
        if req.model_blobs:
            body.setdefault("files", {})[f"{req.model_blobs[-1][7:19]}.gguf"] = req.model_blobs[-1]
        if req.adapter_blobs:
            body.setdefault("adapters", {})[f"{req.adapter_blobs[-1][7:19]}.gguf"] = req.adapter_blobs[-1]
        if quantize:
            body["quantize"] = quantize
        body["stream"] = True
        for message in client.create(body):
            status = message.get("status")
            if status:
                _err(status)


def _model_files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(path.glob("*.gguf"))
        if not found:
            raise CorralError(f"no GGUF files found in {path}")
        return found
    return [path]


def _upload(client: Client, local: list[Any]) -> dict[str, str]:
    """Upload each local file (HEAD first, like `ollama create`); map file name → digest."""
    out: dict[str, str] = {}
    for item in local:
        for path in _model_files(Path(item.path)):
            digest = file_digest(path)
            if not client.has_blob(digest):
                _err(f"copying file {digest} 0%")
                with open(path, "rb") as f:
                    client.create_blob(digest, f)
            _err(f"copying file {digest} 100%")
            out[path.name] = digest
    return out


@app.command("list")
def list_models(prefix: Optional[str] = typer.Argument(None, help="Only models whose name starts with this.")) -> None:
    """List models (NAME, ID, SIZE, MODIFIED)."""
    with Client() as client:
        models = client.tags()
    rows = [["NAME", "ID", "SIZE", "MODIFIED"]]
    for m in models:
        name = m.get("name") or m.get("model") or ""
        if prefix and not name.lower().startswith(prefix.lower()):
            continue
        size = "-" if m.get("remote_model") else human_bytes(int(m.get("size") or 0))
        rows.append([name, str(m.get("digest", ""))[:12], size, human_time(m.get("modified_at"))])
    sys.stdout.write(table(rows))


app.command("ls", hidden=True)(list_models)


@app.command("show")
def show(
    model: str = typer.Argument(..., help="Model name."),
    license: bool = typer.Option(False, "--license", help="Show the license."),
    modelfile: bool = typer.Option(False, "--modelfile", help="Show the Modelfile."),
    parameters: bool = typer.Option(False, "--parameters", help="Show the parameters."),
    system: bool = typer.Option(False, "--system", help="Show the system prompt."),
    template: bool = typer.Option(False, "--template", help="Show the template."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show metadata and tensors too."),
) -> None:
    """Show information for a model."""
    chosen = [k for k, v in (("license", license), ("modelfile", modelfile), ("parameters", parameters),
                              ("system", system), ("template", template)) if v]
    if len(chosen) > 1:
        raise CorralError(
            "only one of '--license', '--modelfile', '--parameters', '--system', or '--template' can be specified"
        )
    with Client() as client:
        resp = client.show(model, verbose=verbose)
    if chosen:
        value = resp.get(chosen[0]) or ""
        sys.stdout.write(value + ("\n" if chosen[0] in ("license", "modelfile", "parameters") else ""))
        return
    sys.stdout.write(show_info(resp, verbose))


def show_info(resp: dict[str, Any], verbose: bool = False) -> str:
    """Ollama's default `show` view: Model, Capabilities, Parameters, (Metadata, Tensors), System, License."""
    out: list[str] = []

    def section(title: str, rows: list[list[str]]) -> None:
        out.append(f"  {title}\n")
        out.append(table([["", *r] for r in rows]) if rows else "")
        out.append("\n")

    info = resp.get("model_info")
    details = resp.get("details") or {}
    rows: list[list[str]] = []
    if resp.get("remote_host"):
        rows += [["Remote model", str(resp.get("remote_model", ""))], ["Remote URL", str(resp["remote_host"])]]
    if info is not None:
        arch = info.get("general.architecture") if isinstance(info.get("general.architecture"), str) else ""
        if arch:
            rows.append(["architecture", arch])
        params = details.get("parameter_size") or ""
        if not params and isinstance(info.get("general.parameter_count"), (int, float)):
            params = human_number(int(info["general.parameter_count"]))
        if params:
            rows.append(["parameters", params])
        for key, label in (("context_length", "context length"), ("embedding_length", "embedding length")):
            value = info.get(f"{arch}.{key}")
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                rows.append([label, _number(value)])
    else:
        rows += [["architecture", details.get("family", "")], ["parameters", details.get("parameter_size", "")]]
    rows.append(["quantization", details.get("quantization_level", "")])
    if resp.get("requires"):
        rows.append(["requires", resp["requires"]])
    section("Model", rows)
    if resp.get("capabilities"):
        section("Capabilities", [[c] for c in resp["capabilities"]])
    projector = resp.get("projector_info")
    if projector:
        parch = projector.get("general.architecture") if isinstance(projector.get("general.architecture"), str) else ""
        prow = [["architecture", parch]] if parch else []
        if isinstance(projector.get("general.parameter_count"), (int, float)):
            prow.append(["parameters", human_number(int(projector["general.parameter_count"]))])
        for suffix, label in (("embedding_length", "embedding length"), ("projection_dim", "dimensions")):
            for modality in ("vision", "audio"):
                value = projector.get(f"{parch}.{modality}.{suffix}")
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    prow.append([label, _number(value)])
                    break
        section("Projector", prow)
    if resp.get("parameters"):
        section("Parameters", [line.split() for line in resp["parameters"].splitlines() if line.strip()])
    if verbose and info:
        section("Metadata", [[k, _meta(info[k])] for k in sorted(info)])
    if verbose and resp.get("tensors"):
        section("Tensors", [[t["name"], t["type"], "[" + " ".join(map(str, t["shape"])) + "]"] for t in resp["tensors"]])
    for key, title in (("system", "System"), ("license", "License")):
        if resp.get(key):
            section(title, _head(resp[key], 2))
    return "".join(out)


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _meta(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _number(v)
    if isinstance(v, list):
        shown = " ".join(map(str, v[:5]))
        return f"[{shown} ...+{len(v) - 5} more]" if len(v) > 5 else f"[{shown}]"
    return "<nil>" if v is None else str(v)


def _head(text: str, n: int) -> list[list[str]]:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    rows = [[line] for line in lines[:n]]
    return rows + [["..."]] if len(lines) > n else rows


@app.command("cp")
def cp(source: str = typer.Argument(...), destination: str = typer.Argument(...)) -> None:
    """Copy a model."""
    with Client() as client:
        client.copy(source, destination)
    print(f"copied '{source}' to '{destination}'")


@app.command("rm")
def rm(models: list[str] = typer.Argument(..., help="Models to delete.")) -> None:
    """Remove one or more models (unloading them first where the server runs them)."""
    with Client() as client:
        for model in models:
            try:
                for _ in client.generate({"model": model, "keep_alive": 0}):
                    pass
            except APIError as exc:
                if exc.status not in (404, 405) and "not found" not in exc.message:
                    _err(f"Warning: unable to stop model '{model}'")
            client.delete(model)
            print(f"deleted '{model}'")

"""`malsori export MODEL --format onnx --out DIR`: ONNX graphs in the layouts sherpa-onnx loads (docs/export.md)."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["onnx"]), default="onnx", show_default=True, help="Output format.")
@click.option("--out", required=True, type=click.Path(), help="Folder to write (must not exist or be empty, unless --force).")
@click.option("--int8", is_flag=True, help="Also write *.int8.onnx: onnxruntime's dynamic int8 quantization of each graph.")
@click.option("--force", is_flag=True, help="Replace an existing, non-empty --out folder.")
@click.option("--chunk-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="Streaming CTC: default chunk in encoder frames, recorded in the metadata (sherpa-onnx takes its own).")
@click.option("--left-chunks", type=click.IntRange(min=1), default=4, show_default=True,
              help="Streaming CTC: default chunks of cached left context, recorded in the metadata.")
def export(model: str, fmt: str, out: str, int8: bool, force: bool, chunk_size: int, left_chunks: int) -> None:
    """Export MODEL (a model folder or a released model's name) for onnxruntime and sherpa-onnx."""
    from malsori.export import export_onnx

    info = export_onnx(model, out, int8=int8, force=force, chunk_size=chunk_size, left_chunks=left_chunks)
    for role, name in {**info.graphs, **{f"{r} int8": n for r, n in info.int8.items()}}.items():
        click.echo(f"{role}: {out}/{name}")
    click.echo(f"tokens: {out}/tokens.txt  (how to load each file: {out}/export.json, docs/export.md)")

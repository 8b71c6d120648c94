"""cli.output and cli.options in process: notes, write-or-print, the shared recipe-dir options."""

from __future__ import annotations

import click
from click.testing import CliRunner

from neurodocker_nd.cli.options import recipe_dir_options
from neurodocker_nd.cli.output import package_notes, write_or_print
from neurodocker_nd.maintain.gone import dead_download_notes
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render.renderer import render_recipe


def test_dead_download_notes_read_the_renderers_registry(capsys):
    registry = Registry()
    recipe = render_recipe(["ants==2.3.4"], os_name="debian:bookworm", registry=registry)
    assert dead_download_notes(recipe.packages, registry) == [
        "ants 2.3.4 downloads from Dropbox, which answers 403 (neurodocker#635): "
        "the build will fail; choose another version"
    ]
    package_notes(recipe.packages, registry)
    assert capsys.readouterr().err.startswith("ndgen: note: ants 2.3.4 downloads from Dropbox")


def test_write_or_print_writes_the_file_or_stdout(tmp_path, capsys):
    write_or_print("FROM x\n", str(tmp_path / "Dockerfile"))
    write_or_print("FROM y\n", "-")
    assert (tmp_path / "Dockerfile").read_text() == "FROM x\n"
    assert capsys.readouterr().out == "FROM y\n"


def test_recipe_dir_options_scope_prefixes_their_help():
    @click.command()
    @recipe_dir_options("RECIPE_DIR")
    def scoped(arch: str, options: tuple[str, ...], templates: tuple[str, ...]) -> None:
        click.echo(f"{arch} {options} {templates}")

    runner = CliRunner()
    assert "RECIPE_DIR: set a recipe option (repeat)." in runner.invoke(scoped, ["--help"]).output
    assert runner.invoke(scoped, ["--option", "a=b", "--templates", "t"]).output == "x86_64 ('a=b',) ('t',)\n"

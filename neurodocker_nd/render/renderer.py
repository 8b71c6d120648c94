"""Render a Plan (the immutable list of steps) with neurodocker's reproenv renderers.

The one renderer for every front end (`--pkg`, the directive flags, recipe
files): a thin layer over `DockerRenderer` / `SingularityRenderer`:

* templates come from plain template data carried by the step as neurodocker
  `Template`s — never through neurodocker's global registry — and their Jinja
  strings render in a sandbox (neurodocker_nd.render.template_sandbox: registry entries are
  untrusted), the result entering the renderer through its `env()` / `run()`;
* a template's rendered instructions depend only on (template, method,
  arguments, package manager), so a `RecipeRenderer` renders each such block
  once into a scratch renderer and replays its instruction list (the same
  list `Renderer.from_dict` consumes) into every recipe that needs it.  This
  is what makes `ndgen matrix` and `bench/recipes.py` fast: neurodocker
  recompiles every Jinja template on every call;
* every other step maps to one reproenv call (`run`, `env`, `copy`, …);
  declared files a RUN reads (`get_file`) become `RUN --mount=…,from=
  neurocontainer-cache` in Docker and `%files` entries in Singularity;
* two subclasses fix the JSON-saving printf (shellcheck SC2016, and invalid
  JSON from escaped parentheses) and complete the Singularity file with
  `%help`.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from neurodocker_nd import __version__
from neurodocker_nd.core import reproenv, schemamemo
from neurodocker_nd.errors import NdgenError
from neurodocker_nd.registry.entries import Registry
from neurodocker_nd.render import checksum
from neurodocker_nd.render import steps as st
from neurodocker_nd.render.defaults import default_template
from neurodocker_nd.render.pkg import PKG_LIST_ARGS, plan_from_items

Format = Literal["docker", "singularity"]
FORMATS: tuple[Format, ...] = ("docker", "singularity")
# The build stage `RUN --mount=…,from=` reads declared files from (neurocontainers' name).
CACHE_STAGE = "neurocontainer-cache"
# Where --out stages declared files in the build context (neurocontainers' layout).
CACHE_DIR = "cache"
# Where a Singularity build stages COPY sources until %post puts them in place.
COPY_STAGE = "/.ndgen-copy"

# hadolint rules a rendered Dockerfile may still trigger, each caused by
# upstream template text we render unchanged (see docs/render.md).
HADOLINT_IGNORE: tuple[str, ...] = (
    "DL3003",  # `cd` inside RUN (source builds in upstream templates)
    "DL3008",  # apt packages not pinned: recipes track the distribution
    "DL3015",  # afni/spm12 `apt-get install` of .deb files without --no-install-recommends
    "DL3033",  # yum packages not pinned: same reason as DL3008
    "DL3044",  # ENV referring to itself in the same statement (upstream mrtrix3 template)
    "DL4006",  # pipes without `set -o pipefail` (curl | tar in upstream templates)
    "SC2006",  # backticks in the bids_validator template
    "SC2086",  # unquoted variables in the afni template
    "SC2155",  # `export X=$(…)` in the matlabmcr/spm12 templates
)


@attrs.frozen
class Recipe:
    """A rendered Dockerfile or Singularity definition and what it contains."""

    text: str
    fmt: Format
    base_image: str
    pkg_manager: str
    os_name: str
    packages: tuple[st.Package, ...]  # what the recipe installs, for `ndgen build` to test


# ---------------------------------------------------------------- renderer subclasses


def _printf_spec(cmd: str) -> str:
    """Fix the printf command neurodocker writes /.reproenv.json with.

    * `$` and backticks sit in single quotes (shellcheck SC2016): printf's own
      octal escapes (`\\044`, `\\140`) print the same bytes;
    * neurodocker escapes parentheses as `\\(`, which printf prints verbatim,
      so the saved file is invalid JSON whenever a command contains `(`:
      inside single quotes parentheses need no escaping at all.

    Backslashes are already doubled by neurodocker, so an escape we insert
    cannot merge with a preceding one.
    """
    cmd = cmd.replace("\\(", "(").replace("\\)", ")")
    return cmd.replace("$", "\\044").replace("`", "\\140")


# A package spec made of these needs no quoting in any shell context.
_PLAIN_WORD = re.compile(r"^[A-Za-z0-9._+,:/@%=-]+$")


def _quote_pkg_words(value: str) -> str:
    """Quote package specs (`numpy<2`, `nipype[all]`) for neurodocker's miniconda template.

    The template writes each word as `"WORD"`, for pip inside the double-quoted
    argument of `bash -c "… pip install … "WORD" …"` — there the quotes end and
    reopen the outer string, so the word is unquoted in both shells and `<` `>`
    would redirect, `[ ]` `*` glob, a leading `#` comment. A word rendered as
    `""'WORD'""` is literal in both contexts: at top level the single quotes
    hold; inside `bash -c "…"` the outer shell keeps them (they are inside its
    double quotes) and the inner shell applies them. spec.py guarantees the
    word has no quotes, `$`, backticks or backslashes to escape from them.
    """
    return " ".join(w if _PLAIN_WORD.match(w) else f"\"'{w}'\"" for w in value.split())


@functools.cache
def _renderer_classes():
    """Imported lazily: neurodocker's renderers (and jsonschema, jinja2) only when rendering."""
    renderers: Any = reproenv.module("reproenv.renderers")  # untyped: its classes are bases here
    DockerRenderer = renderers.DockerRenderer
    _log_instruction = renderers._log_instruction

    class NdgenDockerRenderer(renderers.DockerRenderer):
        def _get_instructions(self) -> str:
            return _printf_spec(super()._get_instructions())

        def run(self, command: str):
            # Every RUN this renderer writes, whatever step or template it came
            # from: BuildKit reads leading `--mount=…` words as RUN flags (a bind
            # of another local image), which only run_with_cache_mounts may add.
            st.check_no_flags("RUN", command)
            return super().run(command)

        def run_with_cache_mounts(self, mounts: str, command: str):
            """`RUN <ndgen's own --mount flags> COMMAND`: the one RUN that starts with options."""
            st.check_no_flags("RUN", command)
            return DockerRenderer.run(self, f"{mounts} {command.lstrip(' ')}")

    class NdgenSingularityRenderer(renderers.SingularityRenderer):
        help_text: str = ""
        staged_copies: int = 0  # COPY steps staged through %files (see _singularity_copy)

        def _get_instructions(self) -> str:
            # neurodocker continues the printf's lines with ` \`, which a
            # Dockerfile joins before the shell runs; in %post (a shell script)
            # the backslash-newline stays inside the single quotes and printf
            # writes it into the JSON. A newline alone is valid JSON whitespace.
            # (JSON text never contains a raw newline, so only continuations match.)
            return _printf_spec(super()._get_instructions()).replace(" \\\n", "\n")

        def run(self, command: str):
            # The same rule in both formats, so a plan renders in one only if it renders in both.
            st.check_no_flags("RUN", command)
            return super().run(command)

        def env(self, **kwds: str):
            # %environment applies when the container runs, not during %post
            # (Apptainer, and defbuild's stand-in): the same variables are also
            # exported at this point of %post, so later commands see them as
            # later RUNs see ENV in Docker (a recipe's conda PATH, FSLDIR, …).
            super().env(**kwds)
            self._post.append("\n".join(f'export {k}="{v}"' for k, v in kwds.items()))
            return self

        @_log_instruction  # kept in the saved spec, as neurodocker's user() is
        def user(self, user: str):
            # Apptainer runs all of %post as root and the container as the caller:
            # there is no build-time user. neurodocker writes `su - USER`, which in
            # a %post script starts (and at once ends) a login shell on stdin and
            # changes nothing. ndgen only creates the user, as neurodocker does.
            if user not in self._users:
                self._users.add(user)
                self._post.append(
                    f'test "$(getent passwd {user})" \\\n'
                    f"|| useradd --no-user-group --create-home --shell /bin/bash {user}"
                )
            return self

        def render(self) -> str:
            s = super().render()
            if self.help_text:
                s += "\n\n%help\n" + self.help_text
            return s

    return NdgenDockerRenderer, NdgenSingularityRenderer


# ---------------------------------------------------------------- the session


class RecipeRenderer:
    """Renders plans; memoises template blocks for the lifetime of this object.

    `render_plan(plan, fmt)` is the text; `recipe(plan, fmt)` the text with what a
    build needs (target, packages).  The module's `render` and `render_recipe`
    are the public API over these.

    Not shared globally: `render_recipe` makes one per call, `ndgen matrix`
    and `bench/recipes.py` one per run.
    """

    def __init__(self, registry: Registry | None = None) -> None:
        self.registry = registry if registry is not None else Registry()
        self._blocks: dict[tuple, tuple[tuple[str, Mapping[str, Any]], ...]] = {}
        self._prerendered: dict[tuple, Any] = {}  # a template method's result or error: see _prerender
        self._templates: dict[tuple, Any] = {}
        self._docker_cls, self._singularity_cls = _renderer_classes()

    # ---- template blocks
    def _block(
        self, step: st.Template, pkg_manager: str, install_opts: str | None = None
    ) -> tuple[tuple[str, Mapping[str, Any]], ...]:
        memo_key = (step.key, step.method, step.args, pkg_manager, install_opts)
        block = self._blocks.get(memo_key)
        if block is None:
            block = self._render_block(step, pkg_manager, install_opts)
            self._blocks[memo_key] = block
        return block

    def _render_block(self, step: st.Template, pkg_manager: str, install_opts: str | None = None):
        """Render one template method into a scratch renderer; return its instruction list.

        The Jinja strings render in ndgen's sandbox (neurodocker_nd.render.template_sandbox), and
        the scratch renderer receives plain text through `env()` / `run()` — what
        `Renderer.add_template` would call after rendering them unsandboxed.
        """
        from neurodocker_nd.render import template_sandbox as sandbox

        scratch = self._docker_cls(pkg_manager=pkg_manager)
        tmpl = self._template(step)
        with sandbox.refusals(step.key):
            bound = getattr(tmpl, step.method)
            bound.validate_kwds()
            done = self._prerendered.pop((step.key, step.method, step.args, pkg_manager, install_opts), None)
            if isinstance(done, BaseException):
                raise done
            env, command = done if done is not None else sandbox.render_method(bound, pkg_manager, install_opts)
        if bound.instructions and not command.strip():
            raise NdgenError(f"{step.key}: template error: empty rendered instructions")
        try:
            # A template (registry entry, --templates file) is as untrusted as a
            # recipe: its rendered text obeys the rules of the steps a recipe
            # makes, or an ENV value could close its quote and start a
            # `RUN --mount=…`, a command start a RUN flag or a Singularity section.
            if env:
                st.Env(values=env)
            if bound.instructions:
                st.check_command("instructions", command)
        except st.StepError as exc:
            raise NdgenError(f"{step.key}: template refused: {exc}") from None
        if env:
            scratch.env(**env)
        if bound.instructions:
            scratch.run(command)
        return tuple((i["name"], i["kwds"]) for i in json.loads(scratch.to_json())["instructions"])

    def _prerender(self, steps: Iterable[st.Step], pkg_manager: str, install_opts: str | None) -> None:
        """Render the plan's template methods not rendered yet in one worker (a fork each
        was most of their cost); `_render_block` takes each result or error in order and
        checks it as before. One whose template or arguments are invalid, or whose
        outcome the batch cannot tell, is left to `_render_block` to render alone."""
        from neurodocker_nd.render import template_sandbox as sandbox

        keys: list[tuple] = []
        methods = []
        for step in steps:
            if not isinstance(step, st.Template):
                continue
            key = (step.key, step.method, step.args, pkg_manager, install_opts)
            if key in self._blocks or key in keys:
                continue
            try:
                bound = getattr(self._template(step), step.method)
                bound.validate_kwds()
            except Exception:  # noqa: BLE001 - raised again, in order, by _render_block
                continue
            keys.append(key)
            methods.append((bound, pkg_manager, install_opts))
        if len(methods) < 2:
            return  # one is rendered by _render_block in its own worker anyway
        for key, result in zip(keys, sandbox.render_methods(methods), strict=True):
            if result is not None:
                self._prerendered[key] = result

    def _template(self, step: st.Template):
        """One neurodocker Template per (template, arguments), shared by apt and yum.

        `Template()` re-validates against the JSON schema (including checking
        the schema itself) on every construction; the package manager is bound
        at render time (sandbox.BoundMethod), so sharing is safe.
        """
        TemplateError = reproenv.module("reproenv.exceptions").TemplateError

        memo_key = (step.key, step.method, step.args)
        tmpl = self._templates.get(memo_key)
        if tmpl is None:
            args = {k: _quote_pkg_words(v) if k in PKG_LIST_ARGS and step.origin == "pkg" else v for k, v in step.args}
            try:
                if step.schema == "neurodocker":
                    tmpl = _checked_template(st.thaw(step.template), step.method, args)
                else:
                    tmpl = _unchecked_template(step, args)
            except TemplateError as exc:
                raise NdgenError(f"{step.key}: template error: {exc}") from None
            self._templates[memo_key] = tmpl
        return tmpl

    def _default_template(self) -> Mapping[str, Any]:
        return default_template(self.registry)

    # ---- rendering
    def recipe(self, plan: st.Plan, fmt: Format = "docker") -> Recipe:
        """The rendered plan with what a build needs to know about it (target, packages)."""
        t = plan.target
        return Recipe(
            text=self.render_plan(plan, fmt),
            fmt=fmt,
            base_image=t.base_image,
            pkg_manager=t.pkg_manager,
            os_name=t.os_name,
            packages=plan.packages,
        )

    def render_plan(self, plan: st.Plan, fmt: Format = "docker", *, cache_stage: bool = False) -> str:
        """The recipe text of a plan.

        `cache_stage=True` (Docker, for building) first writes the
        `neurocontainer-cache` stage the `RUN --mount=…,from=` lines read:
        `FROM scratch` + `COPY cache/ /` from the build context `--out` makes.
        """
        r = self._rendered(plan, fmt, cache_stage=cache_stage)
        return f"{_masthead(plan, fmt)}\n{r.render()}\n"

    def spec_json(self, plan: st.Plan, fmt: Format = "docker") -> str:
        """The plan as reproenv's instruction list (`neurodocker generate --json`, which
        `neurodocker genfromjson` reads): what the renderer was asked, rendered templates included."""
        return str(self._rendered(plan, fmt).to_json())

    def _rendered(self, plan: st.Plan, fmt: Format, *, cache_stage: bool = False):
        """A reproenv renderer that has received every step of the plan."""
        if fmt not in FORMATS:
            raise NdgenError(f"unknown format {fmt!r}; choose docker or singularity")
        pm = plan.target.pkg_manager
        r = (self._docker_cls if fmt == "docker" else self._singularity_cls)(pkg_manager=pm)
        if fmt == "docker" and cache_stage and plan.cache_mounts:
            r._parts.extend([f"FROM scratch AS {CACHE_STAGE}", f'COPY ["{CACHE_DIR}/", "/"]', ""])
        r.from_(plan.target.base_image)
        self._prerender(plan.steps, pm, plan.target.install_opts)
        for step in plan.steps:
            self._apply(r, step, fmt, pm, plan.target.install_opts)
        if fmt == "singularity" and (r.staged_copies or plan.cache_mounts):
            # Staged COPY sources and get_file() files are build inputs, not image content.
            r.run(f"rm -rf {COPY_STAGE} /.neurocontainer-cache")
        if fmt == "singularity" and plan.help_text:
            r.help_text = plan.help_text
        return r

    def _apply(self, r, step: st.Step, fmt: Format, pm: str, install_opts: str | None = None) -> None:
        if isinstance(step, st.Template):
            self._replay(r, checksum.with_checksum(self._block(step, pm, install_opts), step))
        elif isinstance(step, st.Run):
            if fmt == "singularity":
                for m in step.mounts:
                    for guest, _name in m.files:
                        r.copy([f"{CACHE_DIR}/{m.cache_id}/{guest}"], f"{m.target}/{guest}")
                (r.run_bash if step.shell == "bash" else r.run)(step.command)
            else:
                mounts = " ".join(
                    f"--mount=type=bind,from={CACHE_STAGE},source=/{m.cache_id},target={m.target},readonly"
                    for m in step.mounts
                )
                command = step.command
                if step.shell == "bash":
                    command = f"bash -c '{command}'"
                if mounts:
                    r.run_with_cache_mounts(mounts, command)
                else:
                    r.run(command)
        elif isinstance(step, st.Install):
            r.install(list(step.pkgs), step.opts if step.opts is not None else install_opts)
        elif isinstance(step, st.Env):
            r.env(**dict(step.values))
        elif isinstance(step, st.Copy):
            if fmt == "docker" and step.from_ is not None:
                r.copy(list(step.srcs), step.dst, from_=step.from_)
            elif fmt == "docker":
                r.copy(list(step.srcs), step.dst)
            else:
                _singularity_copy(r, step)
        elif isinstance(step, st.Add):
            if fmt != "docker":
                # reproenv's SingularityRenderer.add raises NotImplementedError: there is no ADD.
                raise NdgenError(
                    f"--add {step.src} {step.dst}: Singularity has no ADD; use --copy and --run 'tar -xf …'"
                )
            r.add(step.src, step.dst)
        elif isinstance(step, st.Workdir):
            r.workdir(step.path)
        elif isinstance(step, st.User):
            r.user(step.name)
        elif isinstance(step, st.Entrypoint):
            # Singularity passes `run` arguments only when the runscript forwards them.
            r.entrypoint(list(step.args) if fmt == "docker" else [*step.args, '"$@"'])
        elif isinstance(step, st.Label):
            r.labels(dict(step.values))
        elif isinstance(step, st.Arg):
            r.arg(step.key, step.value)
        elif isinstance(step, st.Deploy):
            # neurocontainers' contract: two ENV instructions, always present in a recipe.
            r.env(DEPLOY_PATH=":".join(step.path))
            r.env(DEPLOY_BINS=":".join(step.bins))
        else:  # pragma: no cover - the Step union is closed
            raise TypeError(f"unknown step {step!r}")

    @staticmethod
    def _replay(r, block: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        for name, kwds in block:
            getattr(r, name)(**kwds)


def _checked_template(data: dict[str, Any], method: str, args: Mapping[str, str]):
    """neurodocker's `Template(data)`, which checks `data` against reproenv's template schema.

    When the same data passed that check before (core.schemamemo), the installation
    method `Template` would hold is made directly, and jsonschema is not imported.
    """
    from types import SimpleNamespace

    template = reproenv.module("reproenv.template")
    made = []

    def check() -> None:
        kwds = {
            "binaries_kwds": args if method == "binaries" else None,
            "source_kwds": args if method == "source" else None,
        }
        made.append(template.Template(data, **kwds))

    schemamemo.checked(data, reproenv.template_schema_path(), check)
    if made:
        return made[0]
    cls = template._BinariesTemplate if method == "binaries" else template._SourceTemplate
    return SimpleNamespace(**{method: cls(data[method], **args)})


def _unchecked_template(step: st.Template, args: Mapping[str, str]):
    """A neurocontainers-form template (read by render/recipe/templates.py): its installation
    method as neurodocker's own class, without neurodocker's template schema,
    which neurocontainers' templates outgrew (spm12's per-version `urls`
    mappings).  Its strings still render only in ndgen's sandbox."""
    from types import SimpleNamespace

    from neurodocker_nd.render import template_sandbox as sandbox

    template = reproenv.module("reproenv.template")
    base = template._BinariesTemplate if step.method == "binaries" else template._SourceTemplate

    class Method(base):  # type: ignore[misc, valid-type]
        def dependencies(self, pkg_manager: str) -> list[str]:
            # neurocontainers renders each dependency's Jinja (`libncurses{{ … }}`)
            # before the install command sorts them; neurodocker does not.
            bound = sandbox.BoundMethod(self, pkg_manager if pkg_manager in ("apt", "yum") else "apt")
            return [sandbox.render_string(str(d), bound) for d in super().dependencies(pkg_manager)]

    return SimpleNamespace(**{step.method: Method(st.thaw(step.template[step.method]), **args)})


def _singularity_copy(r, step: st.Copy) -> None:
    """A COPY at its place in the build, as Docker does it.

    Apptainer copies all `%files` before `%post` runs, so a COPY into a tree a
    later command creates (or one that must follow a RUN) would land too early.
    Each source goes through `%files` to a staging path, and `%post` copies it
    into place where the COPY stood, with Docker's rules: a directory's
    contents are copied; several sources or a `/`-ended destination mean a
    directory.  Wildcard sources stay plain `%files` entries (no staging name).
    """
    import shlex
    from pathlib import PurePosixPath

    if any(ch in src for src in step.srcs for ch in "*?["):
        r.copy(list(step.srcs), step.dst)
        return
    n = r.staged_copies
    r.staged_copies += 1
    dst = shlex.quote(step.dst)
    into_dir = len(step.srcs) > 1 or step.dst.endswith("/")
    lines = []
    for i, src in enumerate(step.srcs):
        stage = f"{COPY_STAGE}/{n}/{i}/{PurePosixPath(src.rstrip('/')).name or 'src'}"
        r.copy([src], stage)
        s = shlex.quote(stage)
        if into_dir:
            lines.append(f"mkdir -p {dst} && if [ -d {s} ]; then cp -a {s}/. {dst}/; else cp -a {s} {dst}/; fi")
        else:
            lines.append(
                f"if [ -d {s} ]; then mkdir -p {dst} && cp -a {s}/. {dst}/; "
                f'else mkdir -p "$(dirname {dst})" && cp -a {s} {dst}; fi'
            )
    r.run("\n".join(lines))


def _masthead(plan: st.Plan, fmt: Format) -> str:
    fmt_opt = " --format singularity" if fmt == "singularity" else ""
    lines = f"# Generated by ndgen {__version__} with neurodocker {reproenv.version()}.\n"
    if plan.reproduce:
        # A comment line: no line boundary of any parser (a newline in a path,
        # U+2028, U+0085…) may end it, so every control character is escaped.
        shown = "".join(_escape_control(ch) for ch in plan.reproduce)
        lines += f"# Reproduce: {shown}{fmt_opt}\n"
    return lines


def _escape_control(ch: str) -> str:
    """`ch`, or its escape when a single-line value may not hold it (steps.control_char)."""
    if st.control_char(ch) is None:
        return ch
    return f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"


def render(
    plan: st.Plan, fmt: Format = "docker", *, cache_stage: bool = False, registry: Registry | None = None
) -> str:
    """Render one plan (stable API for `ndgen recipe` / `ndgen build`)."""
    return RecipeRenderer(registry).render_plan(plan, fmt, cache_stage=cache_stage)


# ---------------------------------------------------------------- public API


def render_recipe(
    pkgs: Iterable[str | st.Step],
    os_name: str | None = None,
    base_image: str | None = None,
    pkg_manager: str | None = None,
    fmt: Format = "docker",
    registry: Registry | None = None,
) -> Recipe:
    """Render `--pkg …` strings — and directive steps, in command-line order —
    for an OS into a Recipe (stable API for `ndgen build`)."""
    registry = registry if registry is not None else Registry()
    plan = plan_from_items(list(pkgs), os_name, base_image, pkg_manager, registry)
    return RecipeRenderer(registry).recipe(plan, fmt)

"""The container image: Dockerfile, build context and `make image`, checked without an engine.

No Docker engine runs here, so the image is checked where it is written: hadolint (pinned in the
dev extras, a static binary in its wheel) lints the Dockerfile with no finding allowed, and our
own rules below state what hadolint cannot know: which base, user, packages, lock, entry points,
version and Spark contract this project's image must have. The entrypoint script embedded in the
Dockerfile runs here for real, against stand-ins for spark-submit and java.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
REPO = "ghcr.io/perucast/perucast"
UID = 10001
# OCI annotations the image carries, with hadolint's label schema for each.
LABELS = {
    "org.opencontainers.image.title": "text",
    "org.opencontainers.image.description": "text",
    "org.opencontainers.image.source": "url",
    "org.opencontainers.image.version": "text",
    "org.opencontainers.image.revision": "text",
    "org.opencontainers.image.licenses": "spdx",
}
BUILD_TOOLS = {"build-essential", "gcc", "g++", "cpp", "make", "cmake", "clang", "git", "cargo"}


# --- a small Dockerfile reader ----------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case
    args: str  # continuation lines joined, comments inside them dropped
    line: int  # 1-based line of the keyword
    stage: int  # index of the FROM it belongs to
    heredoc: str | None = None  # the body of a `<<EOF` heredoc


def parse(text: str) -> list[Instruction]:
    lines = text.splitlines()
    out: list[Instruction] = []
    stage, i = -1, 0
    while i < len(lines):
        if not lines[i].strip() or lines[i].lstrip().startswith("#"):
            i += 1
            continue
        start, parts = i, [lines[i].strip()]
        while parts[-1].endswith("\\"):
            parts[-1] = parts[-1][:-1].strip()
            i += 1
            if lines[i].lstrip().startswith("#"):
                parts.append("\\")  # a comment inside a continuation: skipped, continues
                continue
            parts.append(lines[i].strip())
        i += 1
        keyword, _, args = " ".join(p for p in parts if p != "\\").partition(" ")
        keyword = keyword.upper()
        heredoc = None
        marker = re.search(r"<<-?([\"']?)(\w+)\1", args)
        if keyword in {"RUN", "COPY"} and marker:
            body = []
            while lines[i] != marker.group(2):
                body.append(lines[i])
                i += 1
            i += 1
            heredoc = "\n".join(body) + "\n"
        if keyword == "FROM":
            stage += 1
        out.append(Instruction(keyword, args.strip(), start + 1, stage, heredoc))
    return out


INSTRUCTIONS = parse(DOCKERFILE.read_text())
FROMS = [ins for ins in INSTRUCTIONS if ins.keyword == "FROM"]
FINAL = [ins for ins in INSTRUCTIONS if ins.stage == len(FROMS) - 1]


def of(keyword: str, instructions: list[Instruction] = INSTRUCTIONS) -> list[Instruction]:
    return [ins for ins in instructions if ins.keyword == keyword]


def stage_names() -> dict[str, int]:
    return {
        m.group(1).lower(): ins.stage
        for ins in FROMS
        if (m := re.search(r"\s+AS\s+(\S+)$", ins.args, re.IGNORECASE))
    }


def apt_packages(run: Instruction) -> list[str]:
    """The packages of every `apt-get install` in one RUN."""
    packages = []
    for command in re.split(r"&&|;|\|\|", run.args):
        if "apt-get install" not in command:
            continue
        words = shlex.split(command)
        if words[:2] == ["apt-get", "install"]:
            packages += [w.split("=")[0] for w in words[2:] if not w.startswith("-")]
    return packages


def pip_installs(instructions: list[Instruction]) -> list[str]:
    return [
        command.strip()
        for run in of("RUN", instructions)
        for command in run.args.split("&&")
        if re.search(r"\bpip install\b", command)
    ]


def env_of(instructions: list[Instruction]) -> dict[str, str]:
    env = {}
    for ins in of("ENV", instructions):
        for item in shlex.split(ins.args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def exec_form(ins: Instruction) -> list[str]:
    value = json.loads(ins.args)
    assert isinstance(value, list), f"line {ins.line}: {ins.keyword} must use the exec (JSON) form"
    return value


def tool(name: str) -> str:
    """A dev tool from this virtualenv (make install puts the pinned ones there)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        pytest.fail(
            f"{name} is missing: `make install` (pip install -c requirements.lock '.[dev]')"
        )
    return found


# --- hadolint ---------------------------------------------------------------------------------


def hadolint(dockerfile: Path | str = DOCKERFILE, stdin: str | None = None) -> list[dict]:
    labels = [
        arg for label, kind in LABELS.items() for arg in ("--require-label", f"{label}:{kind}")
    ]
    target = str(dockerfile) if stdin is None else "-"
    result = subprocess.run(
        [tool("hadolint"), "--no-fail", "--format", "json", "--strict-labels", *labels, target],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout or "[]")


def test_hadolint_finds_nothing_down_to_style_level():
    findings = hadolint()
    assert findings == [], "\n".join(
        f"Dockerfile:{f['line']} {f['code']} {f['level']}: {f['message']}" for f in findings
    )


def test_hadolint_reads_the_whole_file():
    """A parse stop (hadolint trips on some heredoc layouts) would hide everything after it."""
    mutated = DOCKERFILE.read_text().replace(f"USER {UID}:{UID}", "USER root")
    codes = {f["code"] for f in hadolint(stdin=mutated)}
    assert "DL1000" not in codes
    assert "DL3002" in codes  # "Last USER should not be root": the last instruction was seen


def test_every_hadolint_ignore_is_justified():
    lines = DOCKERFILE.read_text().splitlines()
    pragmas = [(n, line) for n, line in enumerate(lines) if "hadolint ignore=" in line]
    for n, line in pragmas:
        for code in re.search(r"ignore=([\w,]+)", line).group(1).split(","):
            comments = []
            for above in reversed(lines[:n]):
                if not above.startswith("#"):
                    break
                comments.append(above)
            assert any(c.startswith(f"# {code}:") for c in comments), (
                f"Dockerfile:{n + 1} ignores {code} without a `# {code}: <reason>` comment above"
            )


# --- our own rules ----------------------------------------------------------------------------


def test_every_base_image_is_pinned_to_a_patch_release():
    stages = stage_names()
    for ins in FROMS:
        image = ins.args.split()[0]
        if image.lower() in stages:  # FROM an earlier stage
            continue
        name, _, tag = image.partition("@")[0].rpartition(":")
        assert name and tag, f"line {ins.line}: {image} has no tag"
        assert tag != "latest" and "latest" not in image, f"line {ins.line}: {image}"
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"line {ins.line}: {image} is not a patch release"
    syntax = DOCKERFILE.read_text().splitlines()[0]
    assert re.fullmatch(r"# syntax=docker/dockerfile:\d+\.\d+", syntax), syntax


def test_builder_and_runtime_share_the_python_the_project_requires():
    """The virtualenv is built in one stage and copied into the other: its interpreter links
    must hold, so both stages use the same base, with the Python pyproject.toml requires."""
    bases = {ins.args.split()[0] for ins in FROMS}
    assert len(FROMS) >= 2 and len(bases) == 1, bases
    python = re.match(r"python:(\d+)\.(\d+)\.\d+-slim-", bases.pop())
    assert python, "the base is an official python slim image"
    assert f">={python[1]}.{python[2]}" in PYPROJECT["project"]["requires-python"]
    assert any("--from=builder /opt/venv /opt/venv" in ins.args for ins in of("COPY", FINAL))


def test_final_stage_runs_as_a_fixed_numeric_non_root_user():
    users = of("USER", FINAL)
    assert users, "the final stage sets USER"
    assert users[-1] == of("USER")[-1]
    uid, _, gid = users[-1].args.partition(":")
    assert uid.isdigit() and int(uid) == UID, f"USER {users[-1].args}: numeric, {UID}"
    assert not gid or (gid.isdigit() and int(gid) == UID)
    created = " ".join(ins.args for ins in of("RUN", FINAL))
    assert re.search(rf"useradd\b.*--uid {UID}\b", created), "the user exists in /etc/passwd"
    assert re.search(rf"groupadd\b.*--gid {UID}\b", created)
    # Nothing runs as root after the switch.
    assert not [ins for ins in FINAL if ins.keyword == "RUN" and ins.line > users[-1].line]
    assert of("WORKDIR", FINAL), "the final stage sets WORKDIR"


def test_apt_installs_are_minimal_and_leave_no_lists():
    runs = [run for run in of("RUN") if "apt-get install" in run.args]
    assert runs
    for run in runs:
        assert "--no-install-recommends" in run.args, f"line {run.line}"
        assert "rm -rf /var/lib/apt/lists/*" in run.args, f"line {run.line}"
        assert "apt-get update" in run.args, f"line {run.line}: update in the same layer"


def test_no_build_tools_in_the_final_stage():
    packages = [p for run in of("RUN", FINAL) for p in apt_packages(run)]
    assert "openjdk-17-jre-headless" in packages, "Spark 4 needs a Java 17 runtime"
    assert "tini" in packages
    offending = [
        p
        for p in packages
        if p in BUILD_TOOLS or p.endswith("-dev") or (p.startswith("openjdk") and "-jre" not in p)
    ]
    assert not offending, f"build tools or a JDK in the final stage: {offending}"
    builder = [p for ins in of("RUN") if ins.stage != FINAL[0].stage for p in apt_packages(ins)]
    assert "build-essential" in builder, "compilers live in the builder stage only"


def test_dependencies_come_from_the_lock_without_dev_extras():
    installs = pip_installs(INSTRUCTIONS)
    assert installs, "the builder installs the project"
    for command in installs:
        assert "-c requirements.lock" in command, f"unconstrained: {command}"
        assert "[dev]" not in command and "-e " not in command, f"dev/editable install: {command}"
    assert not pip_installs(FINAL), "the final stage copies the virtualenv, it installs nothing"
    assert any(re.search(r"pip install --no-deps -c requirements.lock \.$", c) for c in installs)
    assert any("pip check" in ins.args for ins in of("RUN"))


def test_the_builders_dependency_list_is_the_projects_runtime_dependencies(tmp_path):
    """Run the builder's own `python -c` (it reads pyproject.toml): the runtime deps, all pinned
    exactly, all at requirements.lock's versions, and no dev tool."""
    run = next(ins for ins in of("RUN") if "tomllib" in ins.args)
    command = run.args.split(">")[0].strip()
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    listed = subprocess.run(
        [sys.executable, *shlex.split(command)[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.split()
    assert listed == PYPROJECT["project"]["dependencies"]
    lock = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        name, _, version = line.partition("==")
        lock[re.sub(r"[-_.]+", "-", name).lower()] = version
    for requirement in listed:
        name, sep, version = requirement.partition("==")
        assert sep, f"{requirement} is not pinned exactly"
        assert lock.get(re.sub(r"[-_.]+", "-", name).lower()) == version, requirement
    dev = {r.split("==")[0] for r in PYPROJECT["project"]["optional-dependencies"]["dev"]}
    assert not dev & {r.split("==")[0] for r in listed}
    assert "kfp==2.17.0" in listed, "components run with install_kfp_package=False"


def test_every_package_and_file_the_build_needs_is_copied():
    copied = set()
    for ins in of("COPY", [i for i in INSTRUCTIONS if i.stage == 0]):
        words = [w for w in shlex.split(ins.args) if not w.startswith("--")]
        copied.update(w.rstrip("/") for w in words[:-1])
    packages = {
        p.rstrip("*") for p in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", "requirements.lock", PYPROJECT["project"]["readme"]} <= copied


def test_entry_points_are_declared_and_used():
    scripts = PYPROJECT["project"]["scripts"]
    assert {"perucast", "perucast-model-server"} <= set(scripts)
    smoke = " ".join(ins.args for ins in of("RUN", FINAL))
    for script in scripts:
        assert f"{script} --help" in smoke, f"the build smoke-tests {script}"
    assert exec_form(of("CMD", FINAL)[-1])[0] in scripts
    assert exec_form(of("ENTRYPOINT", FINAL)[-1]) == [
        "/usr/bin/tini",
        "--",
        "/usr/local/bin/perucast-entrypoint",
    ]


def test_runtime_environment_and_metadata():
    env = env_of(FINAL)
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["PERUCAST_REVISION"] == "${REVISION}", "code_revision() has no .git in the image"
    ports = {p for ins in of("EXPOSE", FINAL) for p in ins.args.split()}
    assert ports == {"8500", "8501"}
    assert [ins.args for ins in of("HEALTHCHECK", FINAL)] == ["NONE"], "decided, see the comment"
    labels = dict(
        item.split("=", 1) for ins in of("LABEL", FINAL) for item in shlex.split(ins.args)
    )
    assert set(labels) == set(LABELS)
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    assert labels["org.opencontainers.image.source"].startswith("https://")


def test_spark_home_is_pysparks_directory_in_the_venv():
    """SPARK_HOME points at the wheel's full Spark; checked against the same layout here."""
    home = env_of(FINAL)["SPARK_HOME"]
    python = re.search(r"python:(\d+\.\d+)", FROMS[-1].args)[1]
    assert home == f"/opt/venv/lib/python{python}/site-packages/pyspark"
    local = Path(sys.prefix) / Path(home).relative_to("/opt/venv")
    assert os.access(local / "bin" / "spark-submit", os.X_OK)
    jars = [j.name for j in (local / "jars").glob("spark-kubernetes_*.jar")]
    assert jars, "pyspark's wheel carries Spark's Kubernetes scheduler"


def test_the_image_tag_is_the_project_version():
    from components.kfp_components import IMAGE, ingest
    from perucast import __version__

    assert __version__ == VERSION
    assert f"{REPO}:{VERSION}" == IMAGE
    assert [ins.args for ins in of("ARG", FINAL) if ins.args.startswith("VERSION=")] == [
        f"VERSION={VERSION}"
    ]
    container = ingest.component_spec.implementation.container
    assert container.image == IMAGE
    assert "pip install" not in " ".join(container.command), "kfp comes from the image"
    # Compiled pipelines and manifests name the same tag wherever they name the image.
    files = [*ROOT.glob("pipelines/compiled/*.yaml"), *ROOT.glob("manifests/**/*.yaml")]
    tags = {
        (f.relative_to(ROOT).as_posix(), tag)
        for f in files
        for tag in re.findall(rf"{re.escape(REPO)}:([\w.-]+)", f.read_text())
    }
    assert tags and {tag for _, tag in tags} == {VERSION}, sorted(tags)


# --- the build context ------------------------------------------------------------------------


def dockerignored(path: str) -> bool:
    """Docker's .dockerignore semantics, enough for our patterns: the last match wins, a pattern
    that matches a directory covers what is under it, `**` spans directories."""
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            negate = line.startswith("!")
            rules.append((negate, line.lstrip("!").strip("/")))
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, pattern in rules:
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]").replace(r"\[", "[").replace(r"\]", "]")
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "data/raw/crop_demand/prices.parquet",
        "demo_output/report.html",
        "bench/_work/demo.log",
        "bench/results.json",
        ".dvc-storage/ab/cdef",
        ".dvc/config",
        ".pytest_cache/v/cache/lastfailed",
        ".ruff_cache/CACHEDIR.TAG",
        "perucast/__pycache__/cli.cpython-311.pyc",
        "serving/protos/__pycache__/x.pyc",
        "perucast.egg-info/PKG-INFO",
        "tests/test_image.py",
        ".env",
        "Dockerfile",
    ],
)
def test_the_context_leaves_out(path):
    assert dockerignored(path), path


def test_the_context_holds_everything_copied():
    for ins in of("COPY"):
        if ins.heredoc is not None or "--from=" in ins.args:
            continue
        for source in [w for w in shlex.split(ins.args) if not w.startswith("--")][:-1]:
            assert (ROOT / source).exists(), f"line {ins.line}: {source} does not exist"
            assert not dockerignored(source.rstrip("/")), f"line {ins.line}: {source} is ignored"
    tracked = subprocess.run(
        ["git", "ls-files", "perucast", "models", "components", "pipelines", "serving", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked
    sources = [p for p in tracked if p.endswith((".py", ".yaml", ".json")) and "results" not in p]
    left_out = [p for p in sources if dockerignored(p)]
    assert not left_out, left_out


# --- the entrypoint: Spark on Kubernetes's driver/executor contract ----------------------------


@pytest.fixture(scope="module")
def entrypoint(tmp_path_factory) -> Path:
    (copy,) = [
        i for i in of("COPY", FINAL) if i.args.endswith("/usr/local/bin/perucast-entrypoint")
    ]
    assert "--chmod=0755" in copy.args and copy.heredoc.startswith("#!/bin/bash\n")
    path = tmp_path_factory.mktemp("entrypoint") / "perucast-entrypoint"
    path.write_text(copy.heredoc)
    path.chmod(0o755)
    return path


def fake(directory: Path, name: str) -> None:
    """A stand-in program that prints its arguments, one a line."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    (directory / name).chmod(0o755)


def run_entrypoint(
    entrypoint: Path, *args: str, env: dict[str, str]
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(entrypoint), *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_entrypoint_passes_shellcheck(entrypoint):
    result = subprocess.run(
        [tool("shellcheck"), "--severity=style", str(entrypoint)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_entrypoint_runs_any_other_command_as_given(entrypoint):
    result = run_entrypoint(entrypoint, "sh", "-ec", 'echo "$0 $1"', "a b", "c", env={})
    assert (result.returncode, result.stdout) == (0, "a b c\n"), result.stderr
    assert run_entrypoint(entrypoint, "sh", "-c", "exit 3", env={}).returncode == 3


def test_entrypoint_starts_the_spark_driver_in_client_mode(entrypoint, tmp_path):
    fake(tmp_path / "spark" / "bin", "spark-submit")
    args = ["--properties-file", "/opt/spark/conf/spark.properties", "local:///app/job.py", "x y"]
    env = {"SPARK_HOME": str(tmp_path / "spark"), "SPARK_DRIVER_BIND_ADDRESS": "10.1.2.3"}
    result = run_entrypoint(entrypoint, "driver", *args, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "--conf",
        "spark.driver.bindAddress=10.1.2.3",
        "--deploy-mode",
        "client",
        *args,
    ]


def executor_env(tmp_path: Path) -> dict[str, str]:
    fake(tmp_path / "jre" / "bin", "java")
    return {
        "JAVA_HOME": str(tmp_path / "jre"),
        "SPARK_HOME": "/spark",
        "SPARK_EXECUTOR_MEMORY": "2g",
        "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc:7078",
        "SPARK_EXECUTOR_ID": "3",
        "SPARK_EXECUTOR_CORES": "2",
        "SPARK_APPLICATION_ID": "spark-app-1",
        "SPARK_EXECUTOR_POD_IP": "10.1.2.4",
        "SPARK_RESOURCE_PROFILE_ID": "0",
        "SPARK_EXECUTOR_POD_NAME": "job-exec-3",
        "SPARK_JAVA_OPT_10": "-Dlast=1",
        "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
        "SPARK_JAVA_OPT_2": "-Dwith=a space",
    }


def test_entrypoint_starts_a_spark_executor(entrypoint, tmp_path):
    result = run_entrypoint(entrypoint, "executor", env=executor_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "-Dspark.driver.port=7078",
        "-Dwith=a space",
        "-Dlast=1",
        "-Xms2g",
        "-Xmx2g",
        "-cp",
        "/spark/conf:/spark/jars/*",
        "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend",
        "--driver-url",
        "spark://CoarseGrainedScheduler@driver-svc:7078",
        "--executor-id",
        "3",
        "--cores",
        "2",
        "--app-id",
        "spark-app-1",
        "--hostname",
        "10.1.2.4",
        "--resourceProfileId",
        "0",
        "--podName",
        "job-exec-3",
    ]


def test_entrypoint_executor_without_its_environment_fails_clearly(entrypoint, tmp_path):
    env = executor_env(tmp_path)
    del env["SPARK_DRIVER_URL"]
    result = run_entrypoint(entrypoint, "executor", env=env)
    assert result.returncode != 0
    assert "SPARK_DRIVER_URL: unbound variable" in result.stderr


def test_the_executor_backend_class_is_in_this_sparks_kubernetes_jar(entrypoint):
    import pyspark

    (jar,) = (Path(pyspark.__file__).parent / "jars").glob("spark-kubernetes_*.jar")
    backend = "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    assert backend in entrypoint.read_text()
    assert backend.replace(".", "/") + ".class" in zipfile.ZipFile(jar).namelist()


# --- make image -------------------------------------------------------------------------------


def make(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_image_builds_the_pinned_tag():
    result = make("-n", "image")
    assert result.returncode == 0, result.stderr
    (build,) = [line for line in result.stdout.splitlines() if "docker build" in line]
    words = shlex.split(build)
    assert words[words.index("-t") + 1] == f"{REPO}:{VERSION}"
    assert f"VERSION={VERSION}" in words
    assert any(w.startswith("REVISION=") and w != "REVISION=" for w in words)
    assert words[-1] == "."
    assert "docker info" in result.stdout, "the engine is checked before building"


def test_make_image_without_an_engine_fails_clearly(tmp_path):
    result = make("image", env={"DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock"})
    assert result.returncode != 0
    assert "no Docker engine: " in result.stderr
    assert "docker build" not in result.stdout

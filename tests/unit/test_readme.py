"""The README and docs/ as a user reads them: every command block parses as bash, every
setting it sets is valid together with the block's others, every output it reads is one
the program exports, every file, tool, plugin and node path it names exists, and every
link lands. (The connect lines run against the dev stack's outputs in
test_program_outputs.py.)"""
import re
import shlex
import subprocess
import textwrap

import pytest

from components.config import SETTINGS, build_spec
from tests.conftest import REPO
from tests.pulumi_mocks import COMMAND
from tests.unit.test_program_backups import decoded_files
from tests.unit.test_program_backups import run_program as run_with_backups

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def bash_blocks() -> list[tuple[str, int, str]]:
    """(page, line, block text) of every ```bash block, dedented (list items indent them)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in re.finditer(r"^( *)```bash\n(.*?)^ *```", text, re.S | re.M):
            line = text[:m.start()].count("\n") + 1
            found.append((page.name, line, textwrap.dedent(m.group(2))))
    return found


BLOCKS = bash_blocks()
IDS = [f"{page}:{line}" for page, line, _ in BLOCKS]


def commands(block: str) -> list[list[str]]:
    """Each line's words, comments dropped (lines here are one command each)."""
    return [shlex.split(line, comments=True) for line in block.splitlines() if line.strip()]


def test_the_pages_have_command_blocks():
    assert len(BLOCKS) >= 15


@pytest.mark.parametrize("page, line, block", BLOCKS, ids=IDS)
def test_every_block_is_valid_bash(page, line, block):
    p = subprocess.run(["bash", "-n"], input=block, text=True, capture_output=True)
    assert p.returncode == 0, p.stderr


def config_set(block: str) -> dict:
    """The settings a block's `pulumi config set [--path] KEY VALUE` lines make."""
    settings: dict = {}
    for words in commands(block):
        if words[:3] != ["pulumi", "config", "set"]:
            continue
        key, value = [w for w in words[3:] if not w.startswith("--")]
        key = key.removeprefix("pgha:")
        if key.endswith("]"):  # --path 'pgha:adminCidrs[0]'
            settings.setdefault(key.split("[")[0], []).append(value)
        elif "." in key:  # --path pgha:postgresParameters.work_mem
            name, sub = key.split(".", 1)
            settings.setdefault(name, {})[sub] = value
        else:
            settings[key] = value
    return settings


@pytest.mark.parametrize("page, line, block",
                         [b for b in BLOCKS if "pulumi config set" in b[2]],
                         ids=[i for i, b in zip(IDS, BLOCKS) if "pulumi config set" in b[2]])
def test_the_settings_a_block_sets_are_known_and_valid_together(page, line, block):
    settings = config_set(block)
    assert settings and set(settings) <= set(SETTINGS), settings
    if "restoreTarget" in settings and "cloneFromStack" not in settings:
        settings["backups"] = True  # a point-in-time recovery is of a stack with backups
    build_spec(settings)


@pytest.fixture(scope="module")
def exported_outputs() -> set[str]:
    """Every output the program exports (backups and TLS on: the most there are)."""
    return set(run_with_backups({"backups": True}).stack_outputs())


def test_every_output_a_page_reads_is_exported(exported_outputs):
    read = set()
    for _, _, block in BLOCKS:
        read |= set(re.findall(r"pulumi stack output (\w+)", block))
    for page in PAGES:  # also in prose: `$(pulumi stack output backupInfoCommand)`
        read |= set(re.findall(r"pulumi stack output (\w+)", page.read_text()))
    assert read, "no output read"
    assert read <= exported_outputs, sorted(read - exported_outputs)


def test_every_output_is_in_the_readmes_outputs_table(exported_outputs):
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Outputs"):text.index("## Destroy")]
    listed = set(re.findall(r"^\| `(\w+)` \|", section, re.M))
    assert exported_outputs <= listed, sorted(exported_outputs - listed)


def test_every_tool_and_file_a_block_runs_exists():
    named = set()
    for _, _, block in BLOCKS:
        named |= set(re.findall(r"(?:^|\s)((?:tools|tests)/[\w./-]+\.(?:py|sh))", block, re.M))
        named |= set(re.findall(r"(?:^|\s)(tools/[\w-]+\.sh|tools/test\.sh)", block, re.M))
    assert "tools/up.sh" in named and "tools/test.sh" in named
    for path in named:
        assert (REPO / path).is_file(), path


def test_the_plugins_to_install_are_the_ones_the_program_pins():
    pinned = re.search(r"PLUGINS=\(([^)]*)\)", (REPO / "tools/up.sh").read_text()).group(1)
    want = {tuple(p.split(":")) for p in pinned.split()}
    listed = set()
    for _, _, block in BLOCKS:
        for words in commands(block):
            if words[:4] == ["pulumi", "plugin", "install", "resource"]:
                listed.add((words[4], words[5].lstrip("v")))
    assert listed == want


def test_every_node_path_a_block_names_is_one_the_program_writes():
    """/etc, /opt and /var paths in the commands a user runs on a node appear in what
    the program's steps send the nodes (scripts and the files they install), so a
    renamed file cannot leave the docs behind."""
    prog = run_with_backups({"backups": True})
    sources = ""
    for reg in prog.of_type(COMMAND):
        for key in ("create", "update", "delete", "stdin"):
            text = str(reg.inputs.get(key) or "")
            sources += text + "".join(decoded_files(text).values())
    for _, _, block in BLOCKS:
        for path in re.findall(r"(/(?:etc|opt|var)/[\w./-]*\w)", block):
            if path.startswith(("/var/lib/libvirt", "/etc/pgha/firewall.d")):
                continue  # the libvirt host's pool; the admissions' directory by glob
            assert path in sources, path


def anchors(text: str) -> set[str]:
    """GitHub's anchors for a page's headings."""
    out = set()
    for heading in re.findall(r"^#{1,6} (.+)$", re.sub(r"```.*?```", "", text, flags=re.S),
                              re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_link_lands(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://")):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.exists(), (page.name, target)
        if anchor:
            assert anchor in anchors(dest.read_text()), (page.name, target)

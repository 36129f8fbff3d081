"""The docs cannot fall out of date: every config key, option and default in docs/configuration.md,
every function and test cited in docs/*.md, and the measured numbers in docs/theory.md are
checked against the code and the data."""
import pydoc
import re

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import REPO, table_rows
from vae_lab.data import load_mnist
from vae_lab.registry import LIKELIHOODS
from vae_lab.config import CONF

DOCS = REPO / "docs"
# the groups of the defaults list: every key of every option is checked
GROUPS = tuple(next(iter(entry)) for entry in yaml.safe_load((CONF / "config.yaml").read_text())["defaults"]
               if isinstance(entry, dict) and not next(iter(entry)).startswith("override "))
# picked with +experiment=NAME or on top of a Hydra plugin's config: only their rows are checked here
EXTRA_GROUPS = ("experiment", "hydra/launcher", "hydra/sweeper", "hydra/job_logging")
OPTIONS = {group: sorted(p.stem for p in (CONF / group).glob("*.yaml")) for group in (*GROUPS, *EXTRA_GROUPS)}
TICKED = re.compile(r"`([^`]+)`")


def leaves(node, prefix=""):
    """{'data.root': raw value, ...} for every leaf of a (nested) dict, interpolations unresolved."""
    out = {}
    for key, value in node.items():
        path = f"{prefix}{key}"
        out.update(leaves(value, path + ".") if isinstance(value, dict) else {path: value})
    return out


def composed(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=list(overrides)), resolve=False)


def same_value(documented: str, actual) -> bool:
    if documented == str(actual):
        return True
    try:
        parsed = yaml.safe_load(documented)
    except yaml.YAMLError:
        return False
    return parsed == actual and isinstance(parsed, bool) == isinstance(actual, bool)


@pytest.fixture(scope="module")
def config_keys():
    """Every key path with its value in the default composition, plus the keys of the other options."""
    default = leaves(composed())
    per_option = {(group, option): leaves(composed(f"{group}={option}")) for group in GROUPS for option in OPTIONS[group]}
    hydra_keys = leaves({"hydra": OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml").hydra)})
    return default, per_option, hydra_keys


def test_configuration_page_lists_every_key_and_option(config_keys):
    default, per_option, hydra_keys = config_keys
    text = (DOCS / "configuration.md").read_text()
    rows = table_rows(text)
    documented = {}  # key path -> default cell
    for cells in rows:
        key = TICKED.fullmatch(cells[0])
        if key and "=" not in key[1] and len(cells) >= 3:
            documented[key[1]] = cells[1]

    all_keys = {**default, **hydra_keys}
    for options in per_option.values():
        all_keys = {**options, **all_keys}
    missing = sorted(set(all_keys) - set(documented))
    assert not missing, f"config keys not in docs/configuration.md: {missing}"
    stale = sorted(set(documented) - set(all_keys))
    assert not stale, f"docs/configuration.md documents keys the config no longer has: {stale}"

    for key, cell in documented.items():
        expected = default.get(key, hydra_keys.get(key))
        shown = TICKED.search(cell)
        assert shown and same_value(shown[1], expected), f"{key}: documented default {cell!r}, vae_lab/conf/ has {expected!r}"

    option_rows = {TICKED.match(cells[0])[1].lstrip("+"): cells
                   for cells in rows if TICKED.match(cells[0]) and "=" in cells[0]}
    for group in OPTIONS:
        for option in OPTIONS[group]:
            row = option_rows.get(f"{group}={option}")
            assert row, f"option {group}={option} (vae_lab/conf/{group}/{option}.yaml) is not in docs/configuration.md"
            assert f"`vae_lab/conf/{group}/{option}.yaml`" in row
            if group in EXTRA_GROUPS:
                continue
            ticked = set(TICKED.findall(" | ".join(row)))
            for key, value in per_option[group, option].items():
                if key.startswith(group + ".") and value != default.get(key):
                    assert str(value) in ticked, f"{group}={option}: its {key} `{value}` is not in its row"
    for name in option_rows:
        group, option = name.split("=", 1)
        assert option in OPTIONS.get(group, []), f"docs/configuration.md lists {name}, which vae_lab/conf/ does not have"
    for group, option in re.findall(r"`vae_lab/conf/([\w/]+)/(\w+)\.yaml`", text):
        assert (CONF / group / f"{option}.yaml").is_file(), f"vae_lab/conf/{group}/{option}.yaml does not exist"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_cited_functions_and_tests_exist(page):
    text = (DOCS / page).read_text()
    for name in set(TICKED.findall(text)):
        if re.fullmatch(r"vae_lab(\.\w+)+", name):
            assert pydoc.locate(name) is not None, f"{page} cites `{name}`, which does not exist"
        elif cited := re.fullmatch(r"(tests/test_\w+\.py)::(test_\w+)", name):
            path, test = cited.groups()
            assert (REPO / path).is_file(), f"{page} cites {path}, which does not exist"
            assert re.search(rf"^def {test}\(", (REPO / path).read_text(), re.M), f"{page} cites {name}, which does not exist"
    for target, anchor in re.findall(r"\]\((\w+\.md)?#([^)]+)\)", text):
        linked = (DOCS / (target or page)).read_text()
        headings = {slug(h) for h in re.findall(r"^#+ (.+)$", linked, re.M)}
        assert anchor in headings, f"{page} links to {target or page}#{anchor}, which has no such heading"


def test_collapsed_losses_match_theory(data_root):
    """The mean-image losses of section 5 of docs/theory.md, recomputed through the loss code."""
    text = (DOCS / "theory.md").read_text()
    train = load_mnist(data_root, train=True, download=False).tensors[0].double()
    test = load_mnist(data_root, train=False, download=False).tensors[0].double()

    def collapsed(x, mean):
        logits = torch.logit(mean.clamp(1e-6, 1 - 1e-6))
        totals = {"mse": 0.0, "bce": 0.0}
        for chunk in x.split(10_000):
            for likelihood in totals:
                totals[likelihood] += LIKELIHOODS.build(likelihood).reconstruction(logits.expand_as(chunk), chunk).sum().item()
        return [f"{totals[likelihood] / len(x):.2f}" for likelihood in ("mse", "bce")]

    rows = {cells[0]: cells[1:] for cells in table_rows(text)}
    train_mean, test_mean = train.mean(0, keepdim=True), test.mean(0, keepdim=True)
    assert rows["60,000 training digits (their own mean)"] == collapsed(train, train_mean)
    assert rows["10,000 test digits (their own mean)"] == collapsed(test, test_mean)
    assert rows["10,000 test digits (training mean, as `val/…` would see it)"] == collapsed(test, train_mean)
    assert int((train_mean == 0).sum()) == 67  # "67 pixels are 0 in every training image"

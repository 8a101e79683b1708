import pytest

from frankenscope.organism.model import build_organism, save_folder


@pytest.fixture(scope="session")
def micro():
    """A random micro organism (model, processor); do not mutate it in tests."""
    return build_organism("micro", seed=0)


@pytest.fixture(scope="session")
def micro_dir(tmp_path_factory, micro):
    """The micro organism saved as an HF folder."""
    model, processor = micro
    return save_folder(model, processor, tmp_path_factory.mktemp("org") / "micro")

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


@pytest.fixture(scope="session", autouse=True)
def _hash_cache(tmp_path_factory):
    """Remembered file hashes go to a temporary folder, not the user's ~/.cache (subprocesses inherit it)."""
    import os

    old = os.environ.get("FRANKENSCOPE_HASH_CACHE")
    os.environ["FRANKENSCOPE_HASH_CACHE"] = str(tmp_path_factory.mktemp("file-hashes"))
    yield
    if old is None:
        os.environ.pop("FRANKENSCOPE_HASH_CACHE", None)
    else:
        os.environ["FRANKENSCOPE_HASH_CACHE"] = old

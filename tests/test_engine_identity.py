import argparse

from mam2_server.cli.serve import build_engine
from mam2_server.engines.identity import code_digest, engine_identity


def test_the_code_digest_follows_the_installed_sources(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "stages").mkdir(parents=True)
    (pkg / "stages" / "matte.py").write_text("ALPHA = 1\n")
    (pkg / "notes.txt").write_text("not code")
    first = code_digest(pkg)
    assert code_digest(pkg) == first
    (pkg / "notes.txt").write_text("still not code")
    assert code_digest(pkg) == first
    (pkg / "stages" / "matte.py").write_text("ALPHA = 0.5\n")  # an upgraded matte stage
    assert code_digest(pkg) != first
    (pkg / "stages" / "matte.py").write_text("ALPHA = 1\n")
    (pkg / "stages" / "matte.py").rename(pkg / "stages" / "trimap.py")  # same bytes, another module
    assert code_digest(pkg) != first


def test_a_checkpoint_retrained_in_place_changes_the_identity_the_cache_keys_carry(tmp_path):
    ckpt = tmp_path / "mam2.pt"
    ckpt.write_bytes(b"weights after epoch 1")
    first = engine_identity("mam2", str(ckpt))
    assert engine_identity("mam2", str(ckpt)) == first
    ckpt.write_bytes(b"weights after epoch 2")
    assert engine_identity("mam2", str(ckpt)) != first
    assert engine_identity("classic").startswith("classic:") and engine_identity("classic") != engine_identity("baseline")


def test_mam2_serve_keys_its_cache_by_the_engine_code_and_weights():
    args = argparse.Namespace(engine="classic", checkpoint=None, device="cpu", engine_factory=None)
    engine, identity = build_engine(args)
    assert engine.name == "classic" and identity == f"classic:{code_digest()}"


def test_an_engine_factory_module_is_part_of_the_identity(tmp_path, monkeypatch):
    module = tmp_path / "studio_engine.py"
    module.write_text("from mam2_server.engines import create_engine\n"
                      "def build(config):\n    return create_engine('baseline')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    args = argparse.Namespace(engine="classic", checkpoint=None, device="cpu", engine_factory="studio_engine:build")
    _, first = build_engine(args)
    assert first.startswith("studio_engine:build:") and first.endswith(f":baseline:{code_digest()}")
    module.write_text(module.read_text() + "# tuned\n")
    import importlib
    import sys
    sys.modules.pop("studio_engine", None)
    importlib.invalidate_caches()
    _, second = build_engine(args)
    assert second != first

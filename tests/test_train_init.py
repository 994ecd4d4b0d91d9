"""Training starts from SAM2.1 / DINO ViT-S checkpoint files (tiny ones the tests build); activation checkpointing."""
import numpy as np
import pytest
import torch

from mam2_server.model.build import build_mam2
from mam2_server.model.checkpoint import CheckpointError, is_mam2_new_key
from mam2_server.train.data import SyntheticMattingData
from mam2_server.train.init import enable_activation_checkpointing, init_matter_from_dino, init_model
from mam2_server.train.loop import batch_loss, freeze_for_stage


def write_sam21(path, seed=7):
    """An official-format SAM2.1 file ({'model': state_dict} without MAM2's new keys) for the tiny config."""
    sam = build_mam2("tiny", seed=seed).sam
    torch.save({"model": {k: v for k, v in sam.state_dict().items() if not is_mam2_new_key(k)}}, path)
    return path


def write_dino(path, depth=4, dim=48, grid=10, wrap=False, seed=3):
    """A DINO ViT-S/16-format state dict (cls token, pos_embed with it, blocks.N.*) of the tiny matter's size."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    sd = {"cls_token": r(1, 1, dim), "pos_embed": r(1, 1 + grid * grid, dim),
          "patch_embed.proj.weight": r(dim, 3, 16, 16), "patch_embed.proj.bias": r(dim),
          "norm.weight": r(dim), "norm.bias": r(dim)}
    for i in range(depth):
        for name, shape in (("norm1", (dim,)), ("norm2", (dim,))):
            sd[f"blocks.{i}.{name}.weight"], sd[f"blocks.{i}.{name}.bias"] = r(*shape), r(*shape)
        for name, (o, n) in (("attn.qkv", (3 * dim, dim)), ("attn.proj", (dim, dim)), ("mlp.fc1", (4 * dim, dim)),
                             ("mlp.fc2", (dim, 4 * dim))):
            sd[f"blocks.{i}.{name}.weight"], sd[f"blocks.{i}.{name}.bias"] = r(o, n), r(o)
    torch.save({"teacher": {f"backbone.{k}": v for k, v in sd.items()}} if wrap else sd, path)
    return sd


def test_init_from_sam21_checkpoint(tmp_path):
    path = write_sam21(tmp_path / "sam2.1_tiny_test.pt")
    model, origin = init_model(str(path), "tiny", device=torch.device("cpu"), seed=0)
    official = torch.load(path, weights_only=True)["model"]
    own = model.sam.state_dict()
    assert all(torch.equal(own[k], v) for k, v in official.items())
    assert "tensors loaded" in origin and "new MAM2 tensors initialised" in origin
    random_model, origin = init_model(None, None, device=torch.device("cpu"), seed=0)
    assert origin == "random init (tiny)" and random_model.config.name == "tiny"
    with pytest.raises(CheckpointError):  # a hiera-t file name would pick hiera_t, whose shapes do not fit
        init_model(str(write_sam21(tmp_path / "sam2.1_hiera_tiny.pt")), None, device=torch.device("cpu"), seed=0)


@pytest.mark.parametrize("wrap", [False, True])
def test_init_matter_from_dino(tmp_path, wrap):
    sd = write_dino(tmp_path / "dino.pth", wrap=wrap)
    model = build_mam2("tiny", seed=0)
    router_before = model.matter.backbone.blocks[1].router.inp[1].weight.clone()
    summary = init_matter_from_dino(model, tmp_path / "dino.pth")
    vit = model.matter.backbone
    assert "grid 10 -> 8" in summary
    assert torch.equal(vit.patch_embed.weight[:, :3], sd["patch_embed.proj.weight"])
    assert torch.count_nonzero(vit.patch_embed.weight[:, 3]) == 0  # the trimap channel starts at zero
    assert torch.equal(vit.blocks[2].attn.qkv.weight, sd["blocks.2.attn.qkv.weight"])
    assert torch.equal(vit.blocks[3].mlp.fc2.bias, sd["blocks.3.mlp.fc2.bias"])
    assert vit.pos_embed.shape == (1, 48, 8, 8)
    assert torch.equal(vit.blocks[1].router.inp[1].weight, router_before)  # routers keep their own init


def test_dino_that_does_not_fit_is_refused(tmp_path):
    model = build_mam2("tiny", seed=0)
    write_dino(tmp_path / "deep.pth", depth=2)
    with pytest.raises(CheckpointError, match="not a DINO ViT with 4 blocks"):
        init_matter_from_dino(model, tmp_path / "deep.pth")
    write_dino(tmp_path / "wide.pth", dim=64)
    with pytest.raises(CheckpointError, match="does not fit"):
        init_matter_from_dino(model, tmp_path / "wide.pth")
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        init_matter_from_dino(model, tmp_path / "junk.pth")


@pytest.mark.parametrize("stage,kind", [(1, "VM"), (2, "IM")])
def test_activation_checkpointing_keeps_loss_and_gradients(stage, kind):
    sample = SyntheticMattingData(image_size=128, frames=2, ratios={kind: 1.0}, seed=2)[0]
    grads = []
    for checkpointed in (False, True):
        model = build_mam2("tiny", seed=0)
        if checkpointed:
            assert enable_activation_checkpointing(model) == len(model.sam.image_encoder.trunk.blocks) + 4
        params = freeze_for_stage(model, stage)
        torch.manual_seed(0)
        loss, _, _ = batch_loss(model, [sample], stage)
        loss.backward()
        grads.append((float(loss.detach()), [p.grad.clone() if p.grad is not None else None for p in params]))
    (l0, g0), (l1, g1) = grads
    assert l0 == pytest.approx(l1, rel=1e-5)
    for a, b in zip(g0, g1):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-6)

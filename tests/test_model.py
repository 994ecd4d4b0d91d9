"""MAM2 network parts on the tiny random-weight config (CPU, seconds)."""
import pytest
import torch

from mam2_server.model.build import build_mam2
from mam2_server.model.config import LoRAConfig, MAM2Config, PDDConfig, preset
from mam2_server.model.lora import LoRALinear, inject_lora, merge_lora, unmerge_lora
from mam2_server.model.matter import Matter
from mam2_server.model.pdd import PromptableDualDecoder


@pytest.fixture(scope="module")
def model():
    return build_mam2("tiny", seed=0)


def _frame_feats(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 3, m.sam.image_size, m.sam.image_size, generator=g)
    with torch.no_grad():
        out = m.sam.forward_image(x)
    return m.sam._prepare_backbone_features(out)


def test_config_json_round_trip():
    cfg = preset("tiny")
    assert MAM2Config.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown MAM2 config"):
        preset("nope")


def test_pdd_disabled_is_exactly_sam2_mask_decoder(model):
    from sam2.modeling.sam.mask_decoder import MaskDecoder

    dec = model.sam.sam_mask_decoder
    kwargs = dict(transformer_dim=dec.transformer_dim, transformer=dec.transformer, num_multimask_outputs=3,
                  use_high_res_features=True, iou_prediction_use_sigmoid=True, pred_obj_scores=True,
                  pred_obj_scores_mlp=True, use_multimask_token_for_obj_ptr=True,
                  dynamic_multimask_via_stability=True)
    plain = MaskDecoder(**kwargs).eval()
    off = PromptableDualDecoder(pdd=PDDConfig(enabled=False), **kwargs).eval()
    assert set(off.state_dict()) == set(plain.state_dict())
    off.load_state_dict(plain.state_dict())
    _, feats, pos, sizes = _frame_feats(model)
    hr = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats[:-1], sizes[:-1])]
    img = feats[-1].permute(1, 2, 0).reshape(1, 256, *sizes[-1])
    pe = model.sam.sam_prompt_encoder.get_dense_pe()
    sparse, dense = model.sam.sam_prompt_encoder(points=(torch.tensor([[[30.0, 40.0]]]), torch.tensor([[1]])),
                                                 boxes=None, masks=None)
    with torch.no_grad():
        for multi in (True, False):
            a = plain(img, pe, sparse, dense, multi, False, hr)
            b = off(img, pe, sparse, dense, multi, False, hr)
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, rtol=0, atol=0)
            dual = off.forward_dual(img, pe, sparse, dense, multimask_output=multi, high_res_features=hr)
            assert dual.trimap_logits is None


def test_pdd_outputs_trimap_at_mask_resolution(model):
    _, feats, pos, sizes = _frame_feats(model)
    pix = model.sam.memory_free_features(feats, sizes)
    hr = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(feats[:-1], sizes[:-1])]
    with torch.no_grad():
        out = model.sam._forward_pdd_heads(pix, {"point_coords": torch.tensor([[[30.0, 40.0]]]),
                                                 "point_labels": torch.tensor([[1]], dtype=torch.int32)},
                                           None, hr, multimask_output=True)
    s = model.sam.image_size // 4
    assert out.trimap_logits.shape == (1, 3, s, s)
    assert out.low_res_masks.shape == (1, 1, s, s)
    assert torch.isfinite(out.trimap_logits).all()


def test_mss_second_pass_is_memory_free(model):
    """Pass 2 ignores the memory bank given the same mask prompt; pass 1 does not."""
    sam = model.sam
    _, f0, p0, sizes = _frame_feats(model, seed=1)
    _, f1, p1, _ = _frame_feats(model, seed=2)
    pts = {"point_coords": torch.tensor([[[30.0, 40.0]]]), "point_labels": torch.tensor([[1]], dtype=torch.int32)}

    def bank(seed):
        g = torch.Generator().manual_seed(seed)
        mem = torch.randn(1, 64, *sizes[-1], generator=g)
        pos = [torch.randn(1, 64, *sizes[-1], generator=g)]
        return {"cond_frame_outputs": {0: {"maskmem_features": mem, "maskmem_pos_enc": pos,
                                           "obj_ptr": torch.randn(1, 256, generator=g)}},
                "non_cond_frame_outputs": {}}

    with torch.no_grad():
        outs = [sam.track_step(1, False, f1, p1, sizes, None, None, bank(s), 4, run_mem_encoder=False)
                for s in (10, 11)]
        assert outs[0]["trimap_from"] == "mss"
        assert not torch.equal(outs[0]["pred_masks"], outs[1]["pred_masks"])  # pass 1 sees memory
        hr = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(f1[:-1], sizes[:-1])]
        mask = outs[0]["pred_masks"]
        a = sam.mss_second_pass(f1, sizes, hr, mask)
        torch.testing.assert_close(a.trimap_logits, outs[0]["trimap_logits"])  # track_step's trimap = pass 2
        # same mask prompt, different banks: the second pass has no access to the bank at all
        b = sam.mss_second_pass(f1, sizes, hr, mask.clone())
        torch.testing.assert_close(a.trimap_logits, b.trimap_logits, rtol=0, atol=0)
        first = sam.track_step(0, True, f0, p0, sizes, pts, None, {"cond_frame_outputs": {},
                                                                    "non_cond_frame_outputs": {}}, 4)
        assert first["trimap_from"] == "pass1" and first["trimap_logits"] is not None
        masked = sam.track_step(0, True, f0, p0, sizes, None, torch.ones(1, 1, 128, 128) > 0,
                                {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, 4)
        assert masked["trimap_from"] == "mask" and masked["trimap_logits"].shape[1] == 3


def test_lora_merge_is_equivalent():
    torch.manual_seed(0)
    base = torch.nn.Sequential(torch.nn.Linear(8, 16))
    base.qkv = torch.nn.Linear(16, 48)
    names = inject_lora(base, LoRAConfig(rank=4, alpha=8.0, targets=("qkv",)))
    assert names == ["qkv"] and isinstance(base.qkv, LoRALinear)
    with torch.no_grad():
        base.qkv.lora_B.normal_()
    x = torch.randn(5, 16)
    y = base.qkv(x)
    assert merge_lora(base) == 1
    torch.testing.assert_close(base.qkv(x), y, rtol=1e-5, atol=1e-5)
    unmerge_lora(base)
    torch.testing.assert_close(base.qkv(x), y, rtol=1e-5, atol=1e-5)


def test_lora_on_image_encoder_merge_keeps_outputs():
    m = build_mam2(preset("tiny"), seed=3)
    lora = [mod for mod in m.sam.image_encoder.modules() if isinstance(mod, LoRALinear)]
    assert lora and {n.rsplit(".", 1)[-1] for n, mm in m.sam.image_encoder.named_modules()
                     if isinstance(mm, LoRALinear)} == {"qkv", "proj"}
    with torch.no_grad():
        for mod in lora:
            mod.lora_B.normal_(std=0.02)
        x = torch.randn(1, 3, 128, 128)
        before = m.sam.forward_image(x)["vision_features"]
        merge_lora(m)
        after = m.sam.forward_image(x)["vision_features"]
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_every_trainable_param_gets_a_grad():
    m = build_mam2(preset("tiny"), seed=4).train()
    for p in m.parameters():
        p.requires_grad_(False)
    params = list(m.trainable_parameters("main")) + list(m.trainable_parameters("matter"))
    for p in params:
        p.requires_grad_(True)
    for mod in m.modules():
        if isinstance(mod, LoRALinear):
            torch.nn.init.normal_(mod.lora_B, std=0.01)  # B = 0 would give A a zero grad
    sam = m.sam
    x = torch.randn(1, 3, 128, 128)
    _, f0, p0, sizes = sam._prepare_backbone_features(sam.forward_image(x))
    pts = {"point_coords": torch.tensor([[[30.0, 40.0], [90.0, 90.0]]]),
           "point_labels": torch.tensor([[1, 0]], dtype=torch.int32)}
    empty = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    out0 = sam.track_step(0, True, f0, p0, sizes, pts, None, empty, 3)
    bank = {"cond_frame_outputs": {0: out0}, "non_cond_frame_outputs": {}}
    x1 = torch.randn(1, 3, 128, 128)
    _, f1, p1, _ = sam._prepare_backbone_features(sam.forward_image(x1))
    out1 = sam.track_step(1, False, f1, p1, sizes, None, None, bank, 3)
    # a pass-1 trimap on frame 1 too, so the PDD's trimap parts see both passes
    tri = sam.mss_second_pass(f1, sizes, [f.permute(1, 2, 0).reshape(1, -1, *s)
                                                             for f, s in zip(f1[:-1], sizes[:-1])],
                              out1["pred_masks"]).trimap_logits
    alpha, keeps = m.matter.forward_with_routing(torch.randn(1, 3, 64, 96), torch.rand(1, 1, 64, 96))
    loss = (out0["pred_masks_high_res"].mean() + out1["pred_masks"].mean() + out1["trimap_logits"].mean()
            + out0["trimap_logits"].mean() + tri.mean() + alpha.mean() + sum(k.mean() for k in keeps)
            + out1["maskmem_features"].mean() + out0["obj_ptr"].mean() + out1["obj_ptr"].mean()
            + out1["object_score_logits"].mean() + out0["maskmem_features"].mean())
    ious = sam._forward_pdd_heads(sam.memory_free_features(f0, sizes), pts, None,
                                  [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(f0[:-1], sizes[:-1])],
                                  multimask_output=True).ious
    (loss + ious.mean()).backward()
    names = {id(p): n for n, p in m.named_parameters()}
    no_grad = [names[id(p)] for p in params if p.grad is None]
    # parts that are unreachable by design in this graph
    allowed = ("sam.no_mem_pos_enc", "sam.sam_prompt_encoder.not_a_point_embed", "sam.mask_downsample",
               "sam.sam_prompt_encoder.point_embeddings.2", "sam.sam_prompt_encoder.point_embeddings.3",
               "sam.sam_prompt_encoder.mask_downscaling", "sam.no_obj_embed_spatial")
    bad = [n for n in no_grad if not n.startswith(allowed)]
    assert not bad, bad


@pytest.mark.parametrize("hw", [(37, 53), (64, 64), (100, 33)])
def test_matter_shapes_at_odd_sizes(hw):
    from mam2_server.model.config import TINY_MATTER

    torch.manual_seed(0)
    m = Matter(config=TINY_MATTER).eval()
    img, tri = torch.rand(1, 3, *hw), torch.full((1, 1, *hw), 0.5)
    with torch.no_grad():
        a = m(m.normalise(img), tri)
    assert a.shape == (1, 1, *hw) and torch.isfinite(a).all() and 0 <= a.min() and a.max() <= 1


def test_matter_tiling_matches_full_decode_and_proxy_runs():
    from mam2_server.model.config import TINY_MATTER

    torch.manual_seed(0)
    cfg = TINY_MATTER
    m = Matter(config=cfg).eval()
    img, tri = torch.rand(1, 3, 320, 288), torch.full((1, 1, 320, 288), 0.5)
    with torch.no_grad():
        full = m(img, tri, tiled=False)
        tiled = m(img, tri, tiled=True)
    # tiles see tile_margin px of context; deep in each tile the decoder's receptive field fits
    assert (full - tiled).abs().mean() < 0.02
    small = Matter(config=MAM2Config().matter.__class__(**{**cfg.__dict__, "max_vit_pixels": 64 * 64})).eval()
    with torch.no_grad():
        a = small(img, tri)
    assert a.shape == (1, 1, 320, 288)


def test_router_caps_global_tokens():
    from mam2_server.model.config import TINY_MATTER
    from mam2_server.model.matter_vit import MatterViT

    vit = MatterViT(config=TINY_MATTER.__class__(**{**TINY_MATTER.__dict__, "max_tokens": 5})).eval()
    with torch.no_grad():
        out = vit(torch.randn(1, 4, 128, 128))
    assert out.features.shape == (1, TINY_MATTER.embed_dim, 8, 8)
    assert all(float(k) <= 5 / 64 + 1e-6 for k in out.keep_fractions)


def test_part_parameters_sum(model):
    counts = model.part_parameters()
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    assert counts["pdd_new"] > 0 and counts["lora"] > 0 and counts["matter"] > 0

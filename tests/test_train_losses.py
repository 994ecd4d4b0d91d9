"""Training losses against hand-computed values, and the selective supervision routing."""
import math

import pytest
import torch
import torch.nn.functional as F

from mam2_server.train.losses import (
    LossWeights,
    alpha_loss,
    dice_loss,
    gradient_penalty_loss,
    keep_ratio_loss,
    laplacian_loss,
    mask_loss,
    normalized_focal_loss,
    separate_l1_loss,
    sigmoid_focal_loss,
    stage_loss,
    supervised_terms,
    trimap_from_alpha,
)

LN2 = math.log(2.0)


def close(a, b, tol=1e-5):
    return abs(float(a) - float(b)) < tol


# -- L_mask ----------------------------------------------------------------------------------
def test_focal_and_dice_hand_values():
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # p = 0.5 everywhere: ce = ln2, (1 - p_t)^2 = 1/4, alpha 0.25 for positives, 0.75 for negatives
    assert close(sigmoid_focal_loss(logits, target), (2 * 0.25 + 2 * 0.75) * 0.25 * LN2 / 4)
    # dice: 1 - (2 * 1 + 1) / (2 + 2 + 1)
    assert close(dice_loss(logits, target), 0.4)


def test_mask_loss_hand_value_and_perfect_prediction():
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    total, parts = mask_loss(torch.zeros(1, 1, 2, 2), torch.tensor([[0.5]]), torch.zeros(1, 1), target)
    # logits 0 -> empty binary mask -> actual IoU 0, so |0.5 - 0|; object score 0 -> BCE ln2
    assert close(parts["iou"], 0.5) and close(parts["cls"], LN2)
    assert close(total, 20 * 0.125 * LN2 + 0.4 + 0.5 + LN2)
    perfect = (target * 2 - 1) * 50
    total, _ = mask_loss(perfect, torch.tensor([[1.0]]), torch.full((1, 1), 50.0), target)
    assert float(total) < 1e-6


def test_mask_loss_picks_the_best_candidate_and_skips_absent_objects():
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    perfect = (target * 2 - 1) * 50
    candidates = torch.cat([-perfect, perfect], dim=1)  # (1, 2, 2, 2): a wrong and a right mask
    total, parts = mask_loss(candidates, torch.tensor([[0.0, 1.0]]), torch.full((1, 1), 50.0), target)
    assert float(total) < 1e-6
    # absent object: mask / dice / IoU zeroed whatever the logits; only the object score is supervised
    total, parts = mask_loss(torch.zeros(1, 1, 2, 2), torch.tensor([[0.3]]), torch.zeros(1, 1),
                             torch.zeros(1, 1, 2, 2), LossWeights())
    assert parts["mask"] == 0 and parts["dice"] == 0 and parts["iou"] == 0
    assert close(total, LN2)


# -- L_trimap --------------------------------------------------------------------------------
def test_nfl_hand_value():
    # pixel A: uniform logits, p = 1/3; pixel B: logits (ln 8, 0, 0), true class 0, p = 0.8
    logits = torch.tensor([[0.0, math.log(8.0)], [0.0, 0.0], [0.0, 0.0]]).view(1, 3, 1, 2)
    target = torch.zeros(1, 1, 2, dtype=torch.long)
    wa, wb = (2 / 3) ** 2, 0.2 ** 2
    expected = (wa * math.log(3) + wb * -math.log(0.8)) / (wa + wb)
    assert close(normalized_focal_loss(logits, target), expected)
    assert close(normalized_focal_loss(torch.zeros(2, 3, 4, 4), torch.ones(2, 4, 4, dtype=torch.long)), math.log(3))


def test_nfl_normaliser_is_detached_and_ignores_easy_pixels():
    logits = torch.randn(1, 3, 3, 3, generator=torch.Generator().manual_seed(0), requires_grad=True)
    target = torch.randint(0, 3, (1, 3, 3), generator=torch.Generator().manual_seed(1))
    normalized_focal_loss(logits, target).backward()
    ref_logits = logits.detach().clone().requires_grad_(True)
    log_p = F.log_softmax(ref_logits, 1).gather(1, target[:, None])[:, 0]
    factor = (1 - log_p.exp()) ** 2
    ((factor * -log_p).sum() / factor.detach().sum()).backward()
    torch.testing.assert_close(logits.grad, ref_logits.grad)
    # one hard pixel, then the same plus 99 nearly-certain ones: NFL barely moves, mean CE is diluted
    hard = torch.tensor([0.0, 2.0, 0.0]).view(1, 3, 1, 1)
    easy = torch.tensor([20.0, 0.0, 0.0]).view(1, 3, 1, 1).expand(1, 3, 1, 99)
    both = torch.cat([hard, easy], dim=3)
    t1, t2 = torch.zeros(1, 1, 1, dtype=torch.long), torch.zeros(1, 1, 100, dtype=torch.long)
    assert close(normalized_focal_loss(both, t2), normalized_focal_loss(hard, t1), tol=1e-4)
    assert F.cross_entropy(both, t2) < 0.05 * F.cross_entropy(hard, t1)


def test_trimap_from_alpha_classes_and_kernel():
    alpha = torch.zeros(1, 1, 9, 9)
    alpha[..., 5:] = 1.0
    alpha[..., 4] = 0.5
    cols = trimap_from_alpha(alpha, 1)[0, 0]
    assert cols.tolist() == [0, 0, 0, 0, 1, 2, 2, 2, 2]  # PDD order: 0 bg / 1 unknown / 2 fg
    cols = trimap_from_alpha(alpha, 3)[0, 0]
    assert cols.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert trimap_from_alpha(alpha, (3, 3)).equal(trimap_from_alpha(alpha, 3))  # a range draws from it
    # the image border is not eroded (no unknown band along the frame edge)
    assert (trimap_from_alpha(torch.ones(1, 1, 6, 6), 5) == 2).all()
    assert trimap_from_alpha(alpha, 3).dtype == torch.long and trimap_from_alpha(alpha, 3).shape == (1, 9, 9)


# -- L_alpha ---------------------------------------------------------------------------------
def test_separate_l1_hand_value():
    pred = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.5], [0.0, 0.0]]]])
    unknown = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    l1_u, l1_k = separate_l1_loss(pred, target, unknown)
    assert close(l1_u, 1.0) and close(l1_k, 0.5 / 3)


def test_laplacian_hand_value_and_invariances():
    stripes = torch.tensor([1.0, -1.0] * 4).expand(1, 1, 8, 8)  # all in the finest band: blur -> 0
    zeros = torch.zeros(1, 1, 8, 8)
    assert close(laplacian_loss(zeros, stripes, levels=1), 1.0)
    assert close(laplacian_loss(zeros, stripes, levels=2), 0.5)  # level 1 of a zero image is 0
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64)  # 5 levels, all >= 4 px
    assert close(laplacian_loss(ramp + 0.3, ramp), 0.0)  # a constant offset has no band-pass content
    assert float(laplacian_loss(torch.rand(2, 1, 5, 7), torch.rand(2, 1, 5, 7))) > 0  # odd / tiny sizes work


def test_gradient_penalty_hand_value():
    ramp = (torch.arange(4.0) * 0.1).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    unknown = torch.ones(1, 1, 4, 4)
    # Sobel-x of the ramp (replicate border): 0.4, 0.8, 0.8, 0.4 -> mean 0.6; Sobel-y 0
    assert close(gradient_penalty_loss(ramp, ramp, unknown), 0.01 * 0.6)
    assert close(gradient_penalty_loss(torch.zeros(1, 1, 4, 4), ramp, unknown), 0.6)


def test_alpha_loss_perfect_prediction_leaves_only_the_smoothness_term():
    target = torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    unknown = (target > 0.5).float()
    total, parts = alpha_loss(target, target, unknown)
    for k in ("l1_unknown", "l1_known", "l2", "laplacian"):
        assert float(parts[k]) < 1e-6
    assert close(total, gradient_penalty_loss(target, target, unknown))
    total, _ = alpha_loss(torch.full((1, 1, 8, 8), 0.5), torch.full((1, 1, 8, 8), 0.5), torch.ones(1, 1, 8, 8))
    assert float(total) < 1e-7


def test_keep_ratio_loss():
    assert close(keep_ratio_loss([torch.tensor([0.25])]), 0.0)
    assert close(keep_ratio_loss([torch.tensor([0.5, 0.3]), torch.tensor([0.25])]), (0.15 ** 2) / 2)
    assert float(keep_ratio_loss([])) == 0.0


# -- selective supervision -------------------------------------------------------------------
def _outputs():
    g = torch.Generator().manual_seed(0)
    return {"mask_logits": torch.randn(1, 3, 8, 8, generator=g), "iou_pred": torch.rand(1, 3, generator=g),
            "object_score_logits": torch.randn(1, 1, generator=g), "trimap_logits": torch.randn(1, 3, 2, 2, generator=g),
            "alpha": torch.rand(1, 1, 8, 8, generator=g), "keep_fractions": [torch.tensor([0.5])]}


def _targets():
    alpha = torch.zeros(1, 1, 8, 8)
    alpha[..., 3:] = 1.0
    return {"mask": (alpha > 0.5).float(), "alpha": alpha, "trimap": trimap_from_alpha(alpha, 3)}


def test_selective_supervision_routing():
    out, tgt = _outputs(), _targets()
    vos = stage_loss(1, "VOS", out, {"mask": tgt["mask"]})  # VOS targets have no alpha / trimap
    assert vos.active and set(vos.parts) == {"mask/mask", "mask/dice", "mask/iou", "mask/cls"}
    assert close(vos.total, mask_loss(out["mask_logits"], out["iou_pred"], out["object_score_logits"], tgt["mask"])[0])
    for kind in ("IM", "VM"):
        b = stage_loss(1, kind, out, tgt)
        assert b.active and set(b.parts) == {"trimap"}
    im2 = stage_loss(2, "IM", out, tgt)
    assert im2.active and {k.split("/")[0] for k in im2.parts} == {"alpha", "keep_ratio"}
    assert close(im2.parts["keep_ratio"], 0.0625)
    for kind in ("VOS", "VM"):
        b = stage_loss(2, kind, {}, {})
        assert not b.active and float(b.total) == 0 and b.parts == {}
    # the unused outputs are never read: stage 1 needs no alpha, stage 2 no mask / trimap logits
    assert stage_loss(1, "IM", {"trimap_logits": out["trimap_logits"]}, tgt).active
    assert stage_loss(2, "IM", {"alpha": out["alpha"]}, tgt).active
    assert supervised_terms(2, "VOS") == () and supervised_terms(1, "VOS") == ("mask",)
    with pytest.raises(ValueError, match="stage"):
        stage_loss(3, "IM", out, tgt)
    with pytest.raises(ValueError, match="sample kind"):
        stage_loss(1, "XX", out, tgt)

"""project() + attention + finish() must reproduce diffusers' own processor exactly."""

import pytest
import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention, AttnProcessor2_0

from harness.attention.explicit import finish, merge_heads, project


def explicit(attn, hidden_states, encoder_hidden_states=None, attention_mask=None):
    projected = project(attn, hidden_states, encoder_hidden_states, attention_mask)
    attended = F.scaled_dot_product_attention(projected.query, projected.key, projected.value,
                                              attn_mask=projected.attention_mask)
    return finish(attn, projected, merge_heads(attended))


@pytest.mark.parametrize("cross", [False, True])
def test_matches_diffusers_on_transformer_attention(cross):
    torch.manual_seed(0)
    attn = Attention(query_dim=32, cross_attention_dim=16 if cross else None, heads=4, dim_head=8).eval()
    hidden = torch.randn(3, 20, 32)
    context = torch.randn(3, 7, 16) if cross else None
    expected = AttnProcessor2_0()(attn, hidden, context)
    torch.testing.assert_close(explicit(attn, hidden, context), expected, rtol=0, atol=1e-6)


def test_matches_diffusers_on_spatial_attention_with_residual_and_mask():
    torch.manual_seed(1)
    attn = Attention(query_dim=16, heads=2, dim_head=8, norm_num_groups=4, residual_connection=True,
                     rescale_output_factor=2.0).eval()
    hidden = torch.randn(2, 16, 3, 5)  # non-square feature map
    mask = torch.zeros(2, 1, 15)
    mask[:, :, -4:] = -10000.0
    expected = AttnProcessor2_0()(attn, hidden, None, mask)
    got = explicit(attn, hidden, None, mask)
    assert got.shape == hidden.shape
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_offset_after_output_is_added_before_the_residual():
    torch.manual_seed(2)
    attn = Attention(query_dim=8, heads=2, dim_head=4, residual_connection=True, rescale_output_factor=2.0).eval()
    hidden = torch.randn(1, 5, 8)
    projected = project(attn, hidden)
    attended = merge_heads(F.scaled_dot_product_attention(projected.query, projected.key, projected.value))
    plain = finish(attn, projected, attended)
    shifted = finish(attn, projected, attended, offset_after_output=torch.full((1, 5, 1), 3.0))
    torch.testing.assert_close(shifted - plain, torch.full_like(plain, 1.5))  # (x + 3) / 2 - x / 2

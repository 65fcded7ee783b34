"""Joint-attention word maps and ConceptAttention on SD3/SD3.5/Flux stand-ins (harness.attention.joint)."""

from __future__ import annotations

import pytest
import torch

from harness.attention import BatchLayout
from harness.attention import joint as joint_module
from harness.attention.joint import (
    JointAttentionTracer,
    concept_embeddings,
    joint_attention_layers,
    text_axis,
)
from harness.models.mmdit_standins import build_mmdit_standin

PROMPT = "a red cat on a chair"


@pytest.fixture(scope="module")
def sd3():
    return build_mmdit_standin("sd3_medium", narrow=True)


@pytest.fixture(scope="module")
def flux():
    return build_mmdit_standin("flux_dev", narrow=True)


def _generate(pipeline, **kwargs):
    generator = torch.Generator().manual_seed(0)
    return pipeline(PROMPT, num_inference_steps=2, height=64, width=64, generator=generator, output_type="np",
                    guidance_scale=3.0, **kwargs).images


def _reference_probabilities(attn, hidden, context, rotary, text_length):
    """Full joint softmax, materialised, following diffusers' JointAttnProcessor2_0 / FluxAttnProcessor
    step by step: (rows, heads, image queries, text keys)."""
    from diffusers.models.embeddings import apply_rotary_emb

    def heads(t):
        return t.unflatten(-1, (attn.heads, -1))

    query, key = heads(attn.to_q(hidden)), heads(attn.to_k(hidden))
    if attn.norm_q is not None:
        query, key = attn.norm_q(query), attn.norm_k(key)
    if context is None:  # Flux single-stream: [text, image] in one sequence
        query, key = apply_rotary_emb(query, rotary, sequence_dim=1), apply_rotary_emb(key, rotary, sequence_dim=1)
        text_slice, image_slice = slice(0, text_length), slice(text_length, None)
    else:
        text_query, text_key = heads(attn.add_q_proj(context)), heads(attn.add_k_proj(context))
        if attn.norm_added_q is not None:
            text_query, text_key = attn.norm_added_q(text_query), attn.norm_added_k(text_key)
        if rotary is not None:  # Flux double-stream: text first
            query, key = torch.cat([text_query, query], 1), torch.cat([text_key, key], 1)
            query, key = apply_rotary_emb(query, rotary, sequence_dim=1), apply_rotary_emb(key, rotary, sequence_dim=1)
            text_slice, image_slice = slice(0, context.shape[1]), slice(context.shape[1], None)
        else:  # SD3: image first
            query, key = torch.cat([query, text_query], 1), torch.cat([key, text_key], 1)
            text_slice, image_slice = slice(hidden.shape[1], None), slice(0, hidden.shape[1])
    scores = query.transpose(1, 2) @ key.transpose(1, 2).transpose(-1, -2) / query.shape[-1] ** 0.5
    probabilities = scores.softmax(dim=-1)
    assert torch.allclose(probabilities.sum(-1), torch.ones(()), atol=1e-5)
    return probabilities[:, :, image_slice, text_slice], probabilities[:, :, image_slice, image_slice]


def _record_inputs(transformer, names):
    """Forward pre-hooks that keep each named attention's inputs (hidden, context, rotary)."""
    seen, handles = {}, []
    for name in names:
        def hook(module, args, kwargs, name=name):
            seen[name] = (kwargs["hidden_states"], kwargs.get("encoder_hidden_states"), kwargs.get("image_rotary_emb"))
        handles.append(transformer.get_submodule(name).register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_maps_are_the_text_block_of_the_full_joint_softmax(model, request, monkeypatch):
    """Each layer's captured map equals the image x text block of the materialised joint softmax
    (mean over heads), and with the image block it sums to 1 per query; small chunks change nothing."""
    pipeline = request.getfixturevalue(model)
    transformer = pipeline.transformer
    layers = joint_attention_layers(pipeline)
    if model == "flux":
        assert any(n.startswith("single_transformer_blocks.") for n in layers)
    monkeypatch.setattr(joint_module, "CHUNK_ELEMENTS", 200)  # many chunks: the reduction is chunk-independent
    seen, handles = _record_inputs(transformer, layers)
    try:
        with JointAttentionTracer(pipeline, layers=None) as tracer:
            _generate(pipeline, num_images_per_prompt=1)
    finally:
        for handle in handles:
            handle.remove()
    assert tracer.branches == (2 if model == "sd3" else 1)  # SD3: CFG [uncond, cond]; Flux: guidance-distilled
    text_length, grid = tracer.text_length, tracer.grid
    for name in layers:
        hidden, context, rotary = seen[name]  # the last step's inputs; compare that step alone
        rows = slice(hidden.shape[0] - 1, hidden.shape[0])  # the cond row is the last
        attn = transformer.get_submodule(name)
        with torch.no_grad():
            text_block, image_block = _reference_probabilities(
                attn, hidden[rows], None if context is None else context[rows], rotary, text_length)
        with torch.no_grad():
            tracer.reset()
            tracer.capturing, tracer._rows = True, slice(0, 1)
            tracer._layout_now = BatchLayout(("cond",))
            tracer.latent_size, tracer.grid, tracer.text_length = (8, 8), grid, text_length
            tracer.joint_call(name, attn, hidden[rows], None if context is None else context[rows], rotary, None)
        captured = tracer.sums[name].total[0, 0]  # (image tokens, text tokens)
        torch.testing.assert_close(captured, text_block.mean(dim=1)[0], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(captured.sum(-1) + image_block.mean(dim=1)[0].sum(-1),
                                   torch.ones(captured.shape[0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("model", ["sd3", "flux"])
def test_concepts_leave_the_image_bit_identical(model, request):
    pipeline = request.getfixturevalue(model)
    plain = _generate(pipeline)
    concepts = concept_embeddings(pipeline, ["cat", "chair", "background"])
    axis = text_axis(pipeline, [PROMPT])
    with JointAttentionTracer(pipeline, columns=axis.columns, concepts=concepts) as tracer:
        traced = _generate(pipeline)
    assert (plain == traced).all()
    maps = tracer.concept_maps()
    assert maps.shape == (1, 3, 8, 8)
    raw = tracer.concept_sums["cross_attention"] / tracer.concept_calls
    torch.testing.assert_close(raw.sum(dim=1), torch.ones(raw.shape[0], raw.shape[2]))  # softmax over concepts
    assert not torch.equal(maps[0, 0], maps[0, 1])


def test_a_concept_equal_to_the_text_gives_the_joint_map_of_its_word():
    """Known answer: concept tokens = the prompt's own text tokens, one head, one block: the raw
    cross-attention map is the joint map renormalised over the text keys, and the concept outputs
    are the text stream's outputs (so the output-space map is softmax over tokens of <o_text, o_image>)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=1, joint_attention_dim=16,
                                        caption_projection_dim=8, pooled_projection_dim=8, pos_embed_max_size=8).eval()
    text = torch.randn(1, 5, 16)
    latents = torch.randn(1, 4, 8, 8)
    name = "transformer_blocks.0.attn"
    outputs = {}
    handle = transformer.get_submodule(name).register_forward_hook(lambda m, a, out: outputs.setdefault("out", out))
    with torch.no_grad(), JointAttentionTracer(transformer, layers=[name], layout=BatchLayout(("cond",)),
                                               concepts=text[0], concept_layers=[name]) as tracer:
        transformer(hidden_states=latents, encoder_hidden_states=text, pooled_projections=torch.randn(1, 8),
                    timestep=torch.tensor([500.0]))
    handle.remove()
    joint = tracer.sums[name].total[0, 0]  # (image tokens, text tokens)
    raw = tracer.concept_sums["cross_attention"][0]  # (concepts = text tokens, image tokens)
    torch.testing.assert_close(raw.T, joint / joint.sum(dim=-1, keepdim=True), atol=1e-6, rtol=1e-5)
    image_out, text_out = outputs["out"]
    expected = torch.einsum("cd,nd->cn", text_out[0], image_out[0]).softmax(dim=0)
    torch.testing.assert_close(tracer.concept_sums["concept_attention"][0], expected, atol=1e-5, rtol=1e-4)


def test_cfg_layout_keeps_the_conditional_rows(sd3):
    """A [uncond, cond] batch gives the cond row's maps: the same as a cond-only call."""
    transformer = sd3.transformer
    torch.manual_seed(1)
    latents = torch.randn(2, 16, 8, 8)
    context = torch.randn(2, 9, transformer.config.joint_attention_dim)
    pooled = torch.randn(2, transformer.config.pooled_projection_dim)
    timestep = torch.tensor([700.0, 700.0])
    results = []
    for layout, rows in ((BatchLayout(("uncond", "cond")), slice(0, 2)), (BatchLayout(("cond",)), slice(1, 2))):
        with torch.no_grad(), JointAttentionTracer(transformer, layers=None, layout=layout) as tracer:
            transformer(hidden_states=latents[rows], encoder_hidden_states=context[rows], pooled_projections=pooled[rows],
                        timestep=timestep[rows])
        results.append(tracer.token_maps())
    torch.testing.assert_close(results[0], results[1], atol=1e-6, rtol=1e-5)
    with torch.no_grad(), JointAttentionTracer(transformer, layers=None, layout=BatchLayout(("uncond", "cond"), "uncond")) as other:
        transformer(hidden_states=latents, encoder_hidden_states=context, pooled_projections=pooled, timestep=timestep)
    assert not torch.allclose(other.token_maps(), results[0])


def test_batch_layout_of_sd3_and_flux_pipelines(sd3, flux):
    assert BatchLayout.for_pipeline(sd3, guidance_scale=3.0).branches == ("uncond", "cond")
    assert BatchLayout.for_pipeline(sd3, guidance_scale=1.0).branches == ("cond",)
    assert BatchLayout.for_pipeline(flux, guidance_scale=3.5).branches == ("cond",)  # guidance embedding, no CFG rows


def test_step_window_and_layer_patterns(sd3):
    with JointAttentionTracer(sd3, layers=["transformer_blocks.1.*"], step_window=[1, 2]) as tracer:
        _generate(sd3)
    assert [layer["name"] for layer in tracer.layers_used()] == ["transformer_blocks.1.attn"]
    assert tracer.layers_used()[0]["calls"] == 1
    from harness.errors import ConfigError

    with pytest.raises(ConfigError, match="matches no"):
        JointAttentionTracer(sd3, layers=["down_blocks.*"])

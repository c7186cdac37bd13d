// Qwen3ForCausalLM.FreezeProjections (Model/Qwen3ForCausalLM.cs, used by every Generate call): no-grad forwards
// through row-major copies of the projection weights give the same logits bit for bit as F.linear's, at the main
// job's shapes (prefill and cached decoding steps of GRPO's batch, a full no-grad pass of an SFT batch) and another
// model's, from FrozenProjections.FromRows rows up (fewer rows keep F.linear: oneMKL sums those in another order);
// forwards under autograd ignore the copies; large, bf16 and biased models make none; the copies die with the scope.
using TorchSharp;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class FrozenProjectionsTests
{
    /// <summary>The main job's model (its config's defaults), with the task vocabulary's 260 tokens.</summary>
    static Qwen3Config MainJob => new Workbook.Experiments.ExperimentConfig().ModelConfig(260);

    static Qwen3Config Other =>
        MainJob with
        {
            HiddenSize = 64,
            IntermediateSize = 160,
            NumHiddenLayers = 2,
            NumKeyValueHeads = 1,
            HeadDim = 16,
            VocabSize = 300,
        };

    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    /// <summary>A prefill of <paramref name="batch"/> prompts of <paramref name="prompt"/> tokens and
    /// <paramref name="steps"/> cached one-token steps: every step's logits, in order.</summary>
    static List<Tensor> Decode(Qwen3ForCausalLM m, long batch, long prompt, int steps)
    {
        using var _ = no_grad();
        using var cache = m.NewCache(batch, prompt + steps);
        var ids = randint(0, m.Config.VocabSize, [batch, prompt], generator: new Generator(5));
        var mask = ones([batch, prompt], dtype: ScalarType.Int64);
        var outs = new List<Tensor>();
        for (int s = 0; s <= steps; s++)
        {
            var logits = m.Forward(ids, mask, cache: cache, lastOnly: true);
            outs.Add(logits);
            ids = logits.argmax(-1).unsqueeze(1);
            mask = cat([mask, ones([batch, 1], dtype: ScalarType.Int64)], 1);
        }
        return outs;
    }

    [Theory]
    [InlineData(true, 64, 12, 6)] // GRPO's rollout batch on the main job's model
    [InlineData(true, 1, 30, 3)] // one row: the decoding steps keep F.linear (below FromRows)
    [InlineData(true, 16, 3, 3)] // just at FromRows
    [InlineData(false, 8, 9, 4)]
    public void Decoding_with_frozen_projections_gives_the_same_logits_bit_for_bit(
        bool mainJob,
        int batch,
        int prompt,
        int steps
    )
    {
        using var scope = NewDisposeScope();
        using var m = new Qwen3ForCausalLM(mainJob ? MainJob : Other, ScalarType.Float32, CPU, seed: 3);
        Assert.True(m.FreezesProjections);
        var plain = Decode(m, batch, prompt, steps);
        List<Tensor> frozen;
        using (m.FreezeProjections())
            frozen = Decode(m, batch, prompt, steps);
        Assert.Equal(plain.Count, frozen.Count);
        for (int i = 0; i < plain.Count; i++)
            Assert.True(Same(plain[i], frozen[i]), $"step {i}");
    }

    [Fact]
    public void A_no_grad_pass_over_an_sft_batch_is_unchanged()
    {
        using var scope = NewDisposeScope();
        using var m = new Qwen3ForCausalLM(MainJob, ScalarType.Float32, CPU, seed: 4);
        var ids = randint(0, 260, [32, 72], generator: new Generator(6));
        using var _ = no_grad();
        var plain = m.Forward(ids);
        Tensor frozen;
        using (m.FreezeProjections())
            frozen = m.Forward(ids);
        Assert.True(Same(plain, frozen));
    }

    [Fact]
    public void Inputs_of_FromRows_rows_or_more_use_the_copies_and_fewer_do_not()
    {
        // a weight changed while frozen: the copies are stale by design (Generate never trains), which shows which
        // path a forward took
        using var scope = NewDisposeScope();
        using var m = new Qwen3ForCausalLM(MainJob, ScalarType.Float32, CPU, seed: 9);
        using var _ = no_grad();
        var many = randint(0, 260, [16, 1], generator: new Generator(2));
        var few = many.narrow(0, 0, 15);
        var (manyBefore, fewBefore) = (m.Forward(many), m.Forward(few));
        using Scalar two = 2.0;
        using (m.FreezeProjections())
        {
            m.model.layers[0].mlp.down_proj.weight!.mul_(two);
            Assert.True(Same(manyBefore, m.Forward(many)));
            Assert.False(Same(fewBefore, m.Forward(few)));
        }
        Assert.False(Same(manyBefore, m.Forward(many)));
    }

    [Fact]
    public void Forwards_under_autograd_ignore_the_copies()
    {
        using var scope = NewDisposeScope();
        using var m = new Qwen3ForCausalLM(MainJob, ScalarType.Float32, CPU, seed: 4);
        var ids = randint(0, 260, [4, 10], generator: new Generator(8));
        var q = m.model.layers[1].self_attn.q_proj.weight!;
        var down = m.model.layers[2].mlp.down_proj.weight!;
        Tensor[] Grads()
        {
            m.zero_grad();
            var logits = m.Forward(ids);
            (logits * logits).mean().backward();
            return [q.grad!.clone(), down.grad!.clone()];
        }
        var plain = Grads();
        Tensor[] frozen;
        using (m.FreezeProjections())
            frozen = Grads();
        Assert.True(Same(plain[0], frozen[0]) && Same(plain[1], frozen[1]));
        Assert.True(plain[0].abs().sum().item<float>() > 0);
    }

    [Fact]
    public void Large_bf16_and_biased_models_make_no_copies()
    {
        Assert.True(Qwen3ForCausalLM.FreezesProjectionsFor(MainJob, ScalarType.Float32, CPU));
        Assert.False(Qwen3ForCausalLM.FreezesProjectionsFor(Qwen3Config.Qwen3_0_6B, ScalarType.Float32, CPU));
        Assert.False(Qwen3ForCausalLM.FreezesProjectionsFor(MainJob, ScalarType.BFloat16, CPU));
        Assert.False(
            Qwen3ForCausalLM.FreezesProjectionsFor(MainJob with { AttentionBias = true }, ScalarType.Float32, CPU)
        );
    }

    [Fact]
    public void The_copies_die_with_the_scope()
    {
        using var m = new Qwen3ForCausalLM(Other, ScalarType.Float32, CPU, seed: 2);
        using var ids = randint(0, 300, [2, 5], generator: new Generator(1));
        void Pass()
        {
            using var scope = NewDisposeScope();
            using var _ = no_grad();
            using (m.FreezeProjections())
                m.Forward(ids);
        }
        Pass();
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 20; i++)
            Pass();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        // nested: the inner scope neither copies again nor frees the outer one's copies
        using (m.FreezeProjections())
        {
            var inside = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
            Pass();
            Assert.Equal(inside, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
            Assert.True(m.ProjectionsFrozen);
        }
        Assert.False(m.ProjectionsFrozen);
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        // disposed twice, a nested scope still thaws once: the outer copies stay
        using (m.FreezeProjections())
        {
            var inner = m.FreezeProjections();
            inner.Dispose();
            inner.Dispose();
            Assert.True(m.ProjectionsFrozen);
        }
        Assert.False(m.ProjectionsFrozen);
    }
}

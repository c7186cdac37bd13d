// Model/SharedPrefix.cs and Losses.CompletionLogProbs(groupSize): running each group's prompt once gives the per-row
// forward's log-probabilities, entropies and gradients (float64, to rounding), with left-padded prompts of different
// lengths, right-padded completions, grouped-query attention and a tied head; and GRPO with shared_prompt_forward
// against without it on the same rollouts.

using Workbook.Data;
using Workbook.Model;
using Workbook.Training;
using Workbook.Verifiers;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class SharedPrefixTests(TrainingFixture fx) : IClassFixture<TrainingFixture>
{
    const int V = 64,
        G = 3;

    /// <summary>Three prompts (lengths 5, 2, 7), each with G completions of lengths 1 to 4 (or all of length 1),
    /// laid out as GRPO lays them: [9, P + C] ids and mask, group-major.</summary>
    static (Tensor Ids, Tensor Mask, int P) Batch(bool oneToken = false)
    {
        int[][] prompts =
        [
            [3, 7, 1, 9, 4],
            [11, 2],
            [5, 5, 8, 13, 21, 34, 55],
        ];
        var rows = new List<int[]>();
        var comps = new List<int[]>();
        for (int g = 0; g < prompts.Length; g++)
        for (int i = 0; i < G; i++)
        {
            rows.Add(prompts[g]);
            int len = oneToken ? 1 : 1 + (g + i) % 4;
            comps.Add(Enumerable.Range(0, len).Select(t => (7 * g + 3 * i + t) % V).ToArray());
        }
        int P = prompts.Max(p => p.Length),
            C = comps.Max(c => c.Length);
        var (ids, mask) = PromptPadding.PromptCompletion(rows, P, comps, C, padId: 0);
        return (tensor(ids, [rows.Count, P + C]), tensor(mask, [rows.Count, P + C]), P);
    }

    /// <summary>A float64 tiny model; <paramref name="intoGrad"/>: its tied head takes the in-place lookup gradient
    /// at any size.</summary>
    static Qwen3ForCausalLM TinyModel(bool tied, bool intoGrad, long seed)
    {
        var m = new Qwen3ForCausalLM(
            Qwen3Config.Tiny(V) with
            {
                TieWordEmbeddings = tied,
            },
            ScalarType.Float64,
            CPU,
            seed
        );
        if (intoGrad)
            m.LookupIntoGradFrom = 0;
        return m;
    }

    static (double[] Lp, double[] Ent, Tensor[] Grads) Run(
        Qwen3ForCausalLM m,
        int groupSize,
        bool intoGrad,
        bool oneToken
    )
    {
        var (ids, mask, P) = Batch(oneToken);
        foreach (var p in m.parameters())
            p.grad = null;
        using var mode = intoGrad ? m.ForBackward() : null;
        var (lp, ent) = Losses.CompletionLogProbs(m, ids, mask, P, 0.7, groupSize: groupSize);
        // a weight per token, so that every position's gradient counts
        using var w = linspace(-1, 1, lp.numel(), dtype: ScalarType.Float64).reshape(lp.shape);
        var cm = mask.narrow(1, P, lp.shape[1]).to(ScalarType.Float64);
        (lp * w * cm).sum().backward();
        return (
            lp.detach().data<double>().ToArray(),
            ent!.data<double>().ToArray(),
            m.parameters().Select(p => p.grad!.clone()).ToArray()
        );
    }

    [Theory]
    [InlineData(true, false, false)]
    [InlineData(false, false, false)]
    [InlineData(true, true, false)] // the tied head's in-place lookup gradient, which now sees two lookups per forward
    [InlineData(true, false, true)] // one completion token: only the prompt pass's last position predicts
    public void Shared_prompt_forward_equals_the_per_row_forward(bool tied, bool intoGrad, bool oneToken)
    {
        using var m = TinyModel(tied, intoGrad, seed: 4);
        var (ids, mask, P) = Batch(oneToken);
        Assert.Equal(oneToken ? 1 : 4, ids.shape[1] - P);
        var cm = mask.narrow(1, P, ids.shape[1] - P).to(ScalarType.Float64).data<double>().ToArray();
        var rowwise = Run(m, 1, intoGrad, oneToken);
        var shared = Run(m, G, intoGrad, oneToken);
        for (int i = 0; i < cm.Length; i++)
            if (cm[i] > 0) // padded completion positions predict nothing in either forward
            {
                Assert.Equal(rowwise.Lp[i], shared.Lp[i], 11);
                Assert.Equal(rowwise.Ent[i], shared.Ent[i], 11);
            }
        Assert.Equal(rowwise.Grads.Length, shared.Grads.Length);
        for (int k = 0; k < shared.Grads.Length; k++)
            Assert.True(
                rowwise.Grads[k].allclose(shared.Grads[k], rtol: 1e-9, atol: 1e-12),
                $"gradient {k} differs by {(rowwise.Grads[k] - shared.Grads[k]).abs().max().item<double>()}"
            );
        Assert.Contains(shared.Grads, g => g.abs().max().item<double>() > 1e-3); // not vacuous
    }

    [Fact]
    public void A_group_with_two_prompts_is_refused()
    {
        using var m = new Qwen3ForCausalLM(Qwen3Config.Tiny(V), ScalarType.Float64, CPU, seed: 4);
        var (ids, mask, P) = Batch();
        // rows 0-2 share a prompt; grouping by 2 puts rows 2 and 3 (two prompts) together
        var e = Assert.Throws<ArgumentException>(() =>
            Losses.CompletionLogProbs(m, ids.narrow(0, 0, 4), mask.narrow(0, 0, 4), P, 1.0, groupSize: 2)
        );
        Assert.Contains("more than one prompt", e.Message);
        Assert.Throws<ArgumentException>(() => Losses.CompletionLogProbs(m, ids, mask, P, 1.0, groupSize: 4));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)] // LUFFY: the rollout's groups are G − 1 samples, the training's G rows with the expert's
    public void Grpo_with_and_without_the_shared_prompt_forward_agree_on_the_same_rollouts(bool luffy)
    {
        var prompts = fx.Task.Train.Take(6).ToList();
        var o = new GrpoOptions
        {
            PerDeviceTrainBatchSize = 8,
            NumGenerations = 4,
            MaxCompletionLength = 6,
            Beta = 0.3,
            KlMode = luffy ? "loss" : "reward",
            ScaleRewards = luffy ? "group" : "none",
            NumIterations = luffy ? 2 : 1, // π_old's log-probabilities then enter the ratio
            OffPolicyExpert = luffy,
            OffPolicyShapingGamma = luffy ? 0.1 : null,
            Seed = 5,
        };
        (GrpoBatch Batch, double Loss, Tensor[] Grads) Step(bool shared)
        {
            using var model = fx.NewModel(21, ScalarType.Float64);
            using var reference = fx.NewModel(22, ScalarType.Float64);
            var oo = o with { SharedPromptForward = shared };
            var batch = GrpoBatch.GenerateAndScore(
                model,
                reference,
                fx.Codec,
                prompts,
                prompts.Select(fx.Codec.Prompt).ToArray(),
                new WeightedReward([(fx.Task.Reward, 1.0)]),
                oo,
                new DataOrder(prompts.Count, 5),
                0
            );
            var loss = batch.Loss(model, new GrpoBatch.Accumulator());
            loss.backward();
            return (batch, loss.Value(), model.parameters().Select(p => p.grad!.clone()).ToArray());
        }
        var a = Step(shared: false);
        var b = Step(shared: true);
        Assert.Equal(1, a.Batch.GroupSize);
        Assert.Equal(4, b.Batch.GroupSize);
        Assert.Equal(a.Batch.Ids.shape, b.Batch.Ids.shape); // the rollouts do not depend on the option
        Assert.True(a.Batch.Ids.eq(b.Batch.Ids).all().item<bool>());
        Assert.Equal(a.Batch.Rewards, b.Batch.Rewards);
        Assert.True(a.Batch.RefLogProbs!.allclose(b.Batch.RefLogProbs!, rtol: 1e-10, atol: 1e-12));
        for (int j = 0; j < a.Batch.ShapedRewards.Length; j++)
            Assert.Equal(a.Batch.ShapedRewards[j], b.Batch.ShapedRewards[j], 10);
        Assert.Equal(a.Loss, b.Loss, 10);
        for (int k = 0; k < a.Grads.Length; k++)
            Assert.True(a.Grads[k].allclose(b.Grads[k], rtol: 1e-8, atol: 1e-12), $"gradient {k}");
        Assert.Contains(b.Grads, g => g.abs().max().item<double>() > 1e-4); // not vacuous
        if (luffy)
            Assert.True(a.Batch.OldLogProbs!.allclose(b.Batch.OldLogProbs!, rtol: 1e-10, atol: 1e-12));
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Generation_with_a_shared_prefill_gives_the_per_row_tokens(bool greedy)
    {
        using var m = new Qwen3ForCausalLM(Qwen3Config.Tiny(V), ScalarType.Float64, CPU, seed: 9);
        int[][] unique =
        [
            [3, 7, 1, 9, 4],
            [11, 2],
            [5, 5, 8, 13, 21, 34, 55],
        ];
        var rows = unique.SelectMany(p => Enumerable.Repeat(p, G)).ToList();
        var opt = new GenerationOptions
        {
            MaxNewTokens = 6,
            Greedy = greedy,
            Temperature = 0.9,
            EosTokenIds = [63],
            PadTokenId = 0,
        };
        List<Completion> Gen(int groupSize)
        {
            using var rng = new Generator(17);
            return Generation.Generate(m, rows, opt, rng, groupSize: groupSize);
        }
        var a = Gen(1);
        var b = Gen(G);
        for (int j = 0; j < rows.Count; j++)
        {
            Assert.Equal(a[j].Tokens, b[j].Tokens);
            Assert.Equal(a[j].Truncated, b[j].Truncated);
            for (int t = 0; t < a[j].LogProbs.Length; t++)
                Assert.Equal(a[j].LogProbs[t], b[j].LogProbs[t], 5);
        }
        // the samples of one prompt differ: the rows share the prefix, not the draws
        bool twinsDiffer = Enumerable
            .Range(0, unique.Length)
            .Any(g => !b[G * g].Tokens.SequenceEqual(b[G * g + 1].Tokens));
        Assert.Equal(!greedy, twinsDiffer);
        // rows 2 and 3 hold two prompts
        Assert.Throws<ArgumentException>(() => Generation.Generate(m, rows.Take(6).ToList(), opt, null, groupSize: 2));
        Assert.Throws<ArgumentException>(() => Generation.Generate(m, rows.Skip(1).ToList(), opt, null, groupSize: G));
    }

    /// <summary>A sequence whose loss starts after six tokens, as after a prompt.</summary>
    static SftSequence Seq(params int[] ids) => new(ids, ids.Select((_, i) => i >= 6).ToArray());

    [Fact]
    public void An_sft_batch_knows_the_columns_its_rows_share()
    {
        var rows = new[] { Seq(1, 2, 3, 4, 5, 9, 7, 7), Seq(1, 2, 3, 4, 5, 6, 7), Seq(1, 2, 3, 4, 5, 8, 8, 8, 8) };
        Assert.Equal(5, Losses.MakeSftBatch(rows, 0, 64, packing: false).CommonPrefix);
        Assert.Equal(0, Losses.MakeSftBatch(rows, 0, 64, packing: true).CommonPrefix); // packed rows mix sequences
        Assert.Equal(0, Losses.MakeSftBatch(rows.Take(1).ToList(), 0, 64, packing: false).CommonPrefix);
        // identical rows leave one column to the rows' own pass
        Assert.Equal(7, Losses.MakeSftBatch([rows[0], rows[0]], 0, 64, packing: false).CommonPrefix);
        // shorter than MinCommonPrefix: not worth a pass
        Assert.Equal(0, Losses.MakeSftBatch([Seq(1, 2, 3, 9, 9, 9, 9), Seq(1, 2, 3, 8)], 0, 64, false).CommonPrefix);
        // truncation (max_length) bounds it too
        Assert.Equal(4, Losses.MakeSftBatch([rows[0], rows[0]], 0, 5, packing: false).CommonPrefix);
    }

    [Theory]
    [InlineData(true, false)]
    [InlineData(false, false)]
    [InlineData(true, true)]
    public void An_sft_batch_with_a_common_prefix_gives_the_one_pass_loss_and_gradients(bool tied, bool intoGrad)
    {
        using var m = TinyModel(tied, intoGrad, seed: 6);
        var rows = new[]
        {
            Seq(1, 2, 3, 4, 5, 9, 7, 7, 30, 31),
            Seq(1, 2, 3, 4, 5, 6, 7),
            Seq(1, 2, 3, 4, 5, 8, 8, 8, 8, 40, 41, 42),
        };
        var shared = Losses.MakeSftBatch(rows, 0, 64, packing: false);
        Assert.Equal(5, shared.CommonPrefix);
        (double Nll, double[] Tok, Tensor[] Grads) Run(Losses.Batch b)
        {
            foreach (var p in m.parameters())
                p.grad = null;
            double[] tok;
            using (no_grad())
                tok = Losses.TokenNll(m, b).data<double>().ToArray();
            using var mode = intoGrad ? m.ForBackward() : null;
            var (nll, _) = Losses.SftNll(m, b);
            nll.backward();
            return (nll.item<double>(), tok, m.parameters().Select(p => p.grad!.clone()).ToArray());
        }
        var one = Run(shared with { CommonPrefix = 0 });
        var two = Run(shared);
        Assert.Equal(one.Nll, two.Nll, 11);
        Assert.Equal(one.Tok.Length, two.Tok.Length);
        for (int i = 0; i < one.Tok.Length; i++)
            Assert.Equal(one.Tok[i], two.Tok[i], 11);
        for (int k = 0; k < one.Grads.Length; k++)
            Assert.True(
                one.Grads[k].allclose(two.Grads[k], rtol: 1e-9, atol: 1e-12),
                $"gradient {k} differs by {(one.Grads[k] - two.Grads[k]).abs().max().item<double>()}"
            );
        Assert.Contains(two.Grads, g => g.abs().max().item<double>() > 1e-3); // not vacuous
        // the whole-sequence loss of the base stage (every token): the prefix's own predictions count in every row
        var all = rows.Select(r => new SftSequence(r.Ids, r.Ids.Select(_ => true).ToArray())).ToList();
        var full = Losses.MakeSftBatch(all, 0, 64, packing: false);
        Assert.Equal(Run(full with { CommonPrefix = 0 }).Nll, Run(full).Nll, 11);
    }
}

// Model/LogProbHead.cs: inside ForBackward, a big tied head's completion log-probabilities are taken a few positions
// at a time, the head and log-softmax fused; its log-probabilities, entropies and every gradient agree with the plain
// path (float64), at temperature 1 and not, in one chunk and in many, per row and with the shared prompt; a failure
// in its backward is thrown when the scope closes.
using Workbook.Data;
using Workbook.Model;
using Workbook.Training;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class LogProbHeadTests
{
    const int V = 64;

    /// <summary>Two prompts of lengths 4 and 2 (left-padded), each with two completions of lengths 3 and 1..3.
    /// </summary>
    static (Tensor Ids, Tensor Mask, int P) Batch()
    {
        int[][] prompts =
        [
            [3, 7, 1, 9],
            [11, 2],
        ];
        var rows = new List<int[]>();
        var comps = new List<int[]>();
        for (int g = 0; g < 2; g++)
        for (int i = 0; i < 2; i++)
        {
            rows.Add(prompts[g]);
            comps.Add(Enumerable.Range(0, 3 - g * i * 2).Select(t => (13 * g + 5 * i + 7 * t) % V).ToArray());
        }
        var (ids, mask) = PromptPadding.PromptCompletion(rows, 4, comps, 3, padId: 0);
        return (tensor(ids, [4, 7]), tensor(mask, [4, 7]), 4);
    }

    /// <summary>Log-probabilities, entropies and every parameter's gradient of Σ lp·weights.</summary>
    static (Tensor Lp, Tensor Ent, Tensor[] Grads) Run(Qwen3ForCausalLM m, bool fused, double temperature, int group)
    {
        var (ids, mask, P) = Batch();
        foreach (var p in m.parameters())
            p.grad = null;
        using var mode = fused ? m.ForBackward() : null;
        Assert.Equal(fused, m.FusesLogProbs);
        var (lp, ent) = Losses.CompletionLogProbs(m, ids, mask, P, temperature, entropy: true, groupSize: group);
        var weights = tensor(Enumerable.Range(0, (int)lp.numel()).Select(i => Math.Sin(i)).ToArray()) // per token
            .view(lp.shape)
            .to(lp.dtype);
        (lp * weights).sum().backward();
        return (lp.detach(), ent!, m.parameters().Select(p => p.grad!.clone()).ToArray());
    }

    [Theory]
    [InlineData(1.0, 1L << 20, 1)] // one chunk
    [InlineData(0.7, 3 * V * 4, 1)] // chunks of three positions: the last one shorter
    [InlineData(1.3, V * 4, 2)] // one position a chunk, with the shared prompt
    [InlineData(0.7, 3 * V * 4, 1, true)] // float32: the same to float32 rounding
    public void Fused_log_probabilities_and_gradients_equal_the_plain_ones(
        double temperature,
        long chunk,
        int group,
        bool f32 = false
    )
    {
        using var scope = NewDisposeScope();
        var dtype = f32 ? ScalarType.Float32 : ScalarType.Float64;
        double rtol = f32 ? 1e-4 : 1e-10,
            atol = f32 ? 1e-5 : 1e-13;
        using var m = new Qwen3ForCausalLM(Qwen3Config.Tiny(V), dtype, CPU, seed: 4);
        var plain = Run(m, fused: false, temperature, group);
        m.LookupIntoGradFrom = 0; // the tiny head is far below the 0.6B-scale threshold
        m.LogProbChunkBytes = chunk;
        var fused = Run(m, fused: true, temperature, group);
        static double Max(Tensor t) => t.abs().max().to(ScalarType.Float64).item<double>();
        Assert.True(plain.Lp.allclose(fused.Lp, rtol: rtol, atol: atol), "log-probabilities");
        Assert.True(plain.Ent.allclose(fused.Ent, rtol: rtol, atol: atol), "entropies");
        for (int i = 0; i < plain.Grads.Length; i++)
            Assert.True(
                plain.Grads[i].allclose(fused.Grads[i], rtol: rtol, atol: atol),
                $"gradient {i} differs by {Max(plain.Grads[i] - fused.Grads[i])}"
            );
        Assert.True(Max(m.model.embed_tokens.weight!.grad!) > 1e-6); // not vacuous
    }

    [Fact]
    public void A_failure_in_the_fused_backward_is_thrown_when_the_scope_closes()
    {
        using var scope = NewDisposeScope();
        using var m = new Qwen3ForCausalLM(Qwen3Config.Tiny(V), ScalarType.Float32, CPU, seed: 4);
        m.LookupIntoGradFrom = 0;
        var (ids, mask, P) = Batch();
        var mode = m.ForBackward();
        var (lp, _) = Losses.CompletionLogProbs(m, ids, mask, P, 1.0, entropy: false);
        m.BeforeLookupBackward = () => throw new OutOfMemoryException("injected");
        lp.sum().backward(); // the process survives: nothing crossed libtorch's engine
        var e = Assert.Throws<WorkbookException>(mode.Dispose);
        Assert.Contains("injected", e.Message);
    }
}

// Sampling by inverse CDF (Model/Generation.cs): exact on a grid of uniforms, never picks masked tokens, and matches
// the softmax distribution in frequency through Pick with a seeded generator.
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class SamplingTests
{
    [Fact]
    public void InverseCdfOnAGridReproducesTheProbabilities()
    {
        float[] p = [0.1f, 0f, 0.25f, 0.4f, 0f, 0.25f];
        const int n = 10000;
        var u = Enumerable.Range(0, n).Select(k => (k + 0.5) / n).ToArray();
        var rows = Enumerable.Range(0, n).SelectMany(_ => p).ToArray();
        var ids = Generation.SampleInverseCdf(rows, n, p.Length, u);
        for (int v = 0; v < p.Length; v++)
        {
            int count = ids.Count(i => i == v);
            Assert.True(Math.Abs(count - p[v] * n) <= 1, $"token {v}: {count} of {n}, expected {p[v] * n}");
        }
        // unnormalised rows are scaled by their total; the top end lands on the last token with mass
        Assert.Equal([3L], Generation.SampleInverseCdf([0f, 2f, 0f, 6f, 0f], 1, 5, [0.9999999]));
        Assert.Equal([1L], Generation.SampleInverseCdf([0f, 2f, 0f, 6f, 0f], 1, 5, [0.0]));
        Assert.Throws<WorkbookException>(() => Generation.SampleInverseCdf([0f, 0f], 1, 2, [0.5]));
    }

    [Fact]
    public void PickSamplesTheSoftmaxAndHonoursTopK()
    {
        using var scope = NewDisposeScope();
        const int rows = 20000;
        double[] w = [1.0, 2.0, 0.5, -1.0, 1.5];
        var logits = tensor(
            Enumerable.Range(0, rows).SelectMany(_ => w.Select(x => (float)x)).ToArray(),
            [rows, w.Length]
        );
        double z = w.Sum(Math.Exp);
        using var g = new Generator(42);
        var (ids, logps) = Generation.Pick(logits, new GenerationOptions { Temperature = 1.0 }, g);
        for (int v = 0; v < w.Length; v++)
        {
            double p = Math.Exp(w[v]) / z,
                freq = ids.Count(i => i == v) / (double)rows;
            double sd = Math.Sqrt(p * (1 - p) / rows);
            Assert.True(Math.Abs(freq - p) < 5 * sd, $"token {v}: frequency {freq:F4}, probability {p:F4}");
        }
        for (int r = 0; r < rows; r += 997)
            Assert.Equal(w[ids[r]] - Math.Log(z), logps[r], 5);
        var (top2, _) = Generation.Pick(logits, new GenerationOptions { Temperature = 1.0, TopK = 2 }, g);
        Assert.All(top2, i => Assert.True(i is 1 or 4, $"top-k 2 picked token {i}"));
        // the same seed gives the same tokens
        using var g1 = new Generator(7);
        using var g2 = new Generator(7);
        Assert.Equal(
            Generation.Pick(logits, new GenerationOptions(), g1).ids,
            Generation.Pick(logits, new GenerationOptions(), g2).ids
        );
    }
}

// Model/EmbeddingLookupIntoGrad.cs and Model/TiedHead.cs: inside Qwen3ForCausalLM.ForBackward(), a big embedding's
// lookup (and a tied head) add their gradients into the weight's .grad in place. Checked against the plain gradients
// in float64.

using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class LookupIntoGradTests
{
    static readonly long[] Ids = [5, 9, 5, 2, 41, 9, 9, 3]; // repeats: rows that receive several gradients

    static Qwen3ForCausalLM Model(bool tied = true) =>
        new(Qwen3Config.Tiny(64) with { TieWordEmbeddings = tied }, ScalarType.Float64, CPU, seed: 3);

    static Tensor Loss(Qwen3ForCausalLM m, int shift)
    {
        var ids = tensor(Ids.Select(i => (i + shift) % 64).ToArray(), [2, 4]);
        var logits = m.Forward(ids);
        return nn.functional.cross_entropy(logits.reshape(-1, 64), ids.roll(1, 1).reshape(-1));
    }

    /// <summary>Every parameter's gradient after two accumulated backward passes, with the in-place lookup or
    /// without.</summary>
    static Tensor[] Grads(Qwen3ForCausalLM m, bool intoGrad) =>
        GradsAfter(
            m,
            () =>
            {
                for (int shift = 0; shift < 2; shift++) // the second pass adds into existing gradients
                {
                    using var scope = NewDisposeScope();
                    using var mode = intoGrad ? m.ForBackward() : null;
                    Loss(m, shift).backward();
                }
            }
        );

    /// <summary>Every parameter's gradient after <paramref name="backward"/>, starting from none.</summary>
    static Tensor[] GradsAfter(Qwen3ForCausalLM m, Action backward)
    {
        foreach (var p in m.parameters())
            p.grad = null;
        backward();
        return m.parameters().Select(p => p.grad!.clone()).ToArray();
    }

    static void AssertClose(Tensor[] plain, Tensor[] inPlace)
    {
        Assert.Equal(plain.Length, inPlace.Length);
        for (int i = 0; i < plain.Length; i++)
            Assert.True(
                plain[i].allclose(inPlace[i], rtol: 1e-12, atol: 1e-15),
                $"gradient {i} differs by {(plain[i] - inPlace[i]).abs().max().item<double>()}"
            );
    }

    [Fact]
    public void In_place_lookup_gradients_equal_the_plain_lookups()
    {
        using var scope = NewDisposeScope();
        using var m = Model();
        m.LookupIntoGradFrom = 0; // the tiny head is far below the 0.6B-scale threshold
        var plain = Grads(m, intoGrad: false);
        var inPlace = Grads(m, intoGrad: true);
        AssertClose(plain, inPlace);
    }

    /// <summary>A loss made of two forwards (GRPO with its SFT term): the second forward's lookup runs its backward
    /// before any head gradient reaches .grad, so it starts .grad from zeros; the result is still the plain one.
    /// </summary>
    [Fact]
    public void Two_forwards_in_one_backward_start_the_gradient_from_zeros_and_agree()
    {
        using var scope = NewDisposeScope();
        using var m = Model();
        m.LookupIntoGradFrom = 0;
        Tensor[] Run(bool intoGrad) =>
            GradsAfter(
                m,
                () =>
                {
                    using var mode = intoGrad ? m.ForBackward() : null;
                    Loss(m, 0).Plus(Loss(m, 1)).backward();
                }
            );
        var plain = Run(false);
        var inPlace = Run(true);
        AssertClose(plain, inPlace);
    }

    /// <summary>The in-place lookup and head are really built (so the tests above compare two paths): inside
    /// ForBackward autograd.grad, which they do not serve, sees no path to the embedding at all.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void In_place_paths_are_used_only_inside_ForBackward_and_only_from_the_threshold(bool tied)
    {
        using var scope = NewDisposeScope();
        using var m = Model(tied);
        var w = m.model.embed_tokens.weight!;
        Tensor? GradOfW(bool mode)
        {
            using var _ = mode ? m.ForBackward() : null;
            return autograd.grad([Loss(m, 0)], [w], allow_unused: true)[0];
        }
        var full = GradOfW(false)!;
        Assert.True(GradOfW(true)!.allclose(full, rtol: 0, atol: 0), "below the threshold the paths must stay plain");
        m.LookupIntoGradFrom = 0;
        var inside = GradOfW(true);
        Assert.True(inside is null || inside.IsInvalid, "inside ForBackward autograd should see no path to w");
        Assert.True(GradOfW(false)!.allclose(full, rtol: 0, atol: 0), "outside ForBackward the paths must stay plain");
    }

    /// <summary>An untied model: the lookup adds in place, the head stays autograd's; the gradients agree.</summary>
    [Fact]
    public void An_untied_models_in_place_lookup_agrees_with_the_plain_one()
    {
        using var scope = NewDisposeScope();
        using var m = Model(tied: false);
        m.LookupIntoGradFrom = 0;
        AssertClose(Grads(m, intoGrad: false), Grads(m, intoGrad: true));
    }

    /// <summary>A kept gradient (AdamW.KeepGradsFrom): both in-place paths add into the existing tensor, which stays
    /// the weight's .grad, and the sum is the plain one.</summary>
    [Fact]
    public void In_place_paths_add_into_an_existing_gradient()
    {
        using var scope = NewDisposeScope();
        using var m = Model();
        m.LookupIntoGradFrom = 0;
        var plain = Grads(m, intoGrad: false);
        var w = m.model.embed_tokens.weight!;
        foreach (var p in m.parameters())
            p.grad = null;
        var kept = zeros_like(w);
        w.grad = kept;
        for (int shift = 0; shift < 2; shift++)
        {
            using var inner = NewDisposeScope();
            using var mode = m.ForBackward();
            Loss(m, shift).backward();
        }
        int wi = m.named_parameters().Select(x => x.name).ToList().IndexOf("model.embed_tokens.weight");
        Assert.True(kept.allclose(plain[wi], rtol: 1e-12, atol: 1e-15), "the kept tensor did not receive the sum");
        AssertClose(plain, m.parameters().Select(p => p.grad!.clone()).ToArray());
    }

    /// <summary>A managed exception inside the lookup's backward would end the process (libtorch's engine cannot
    /// carry it): it is kept and thrown, naming the lookup, when the ForBackward scope closes.</summary>
    [Fact]
    public void A_failure_in_the_lookups_backward_is_thrown_when_the_scope_closes()
    {
        using var scope = NewDisposeScope();
        using var m = Model();
        m.LookupIntoGradFrom = 0;
        m.BeforeLookupBackward = () => throw new OutOfMemoryException("injected");
        var mode = m.ForBackward();
        Loss(m, 0).backward(); // returns: the failure is kept
        var e = Assert.Throws<WorkbookException>(mode.Dispose);
        Assert.Contains("embedding's in-place backward failed: injected", e.Message);
        m.BeforeLookupBackward = null;
        using (m.ForBackward()) // the failure is reported once; the next scope is clean
            Loss(m, 1).backward();
    }
}

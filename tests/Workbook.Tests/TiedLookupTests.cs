// Model/TiedEmbeddingLookup.cs: inside Qwen3ForCausalLM.ForBackward(), a tied head's embedding lookup adds its
// gradient into the weight's .grad in place. Checked against the plain lookup's gradients in float64.

using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class TiedLookupTests
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

    /// <summary>The in-place lookup is really built (so the test above compares two paths): autograd.grad, which it
    /// does not serve, then sees only the head's term of the tied weight's gradient.</summary>
    [Fact]
    public void In_place_lookup_is_used_only_inside_ForBackward_and_only_from_the_threshold()
    {
        using var scope = NewDisposeScope();
        using var m = Model();
        var w = m.model.embed_tokens.weight!;
        Tensor GradOfW(bool mode)
        {
            using var _ = mode ? m.ForBackward() : null;
            return autograd.grad([Loss(m, 0)], [w])[0];
        }
        var full = GradOfW(false);
        Assert.True(GradOfW(true).allclose(full, rtol: 0, atol: 0), "below the threshold the lookup must stay plain");
        m.LookupIntoGradFrom = 0;
        Assert.False(GradOfW(true).allclose(full), "inside ForBackward the lookup term should be missing");
        Assert.True(GradOfW(false).allclose(full, rtol: 0, atol: 0), "outside ForBackward the lookup must stay plain");
    }

    [Fact]
    public void An_untied_model_keeps_the_plain_lookup()
    {
        using var scope = NewDisposeScope();
        using var m = Model(tied: false);
        m.LookupIntoGradFrom = 0;
        var plain = Grads(m, intoGrad: false);
        var mode = Grads(m, intoGrad: true);
        for (int i = 0; i < plain.Length; i++)
            Assert.True(plain[i].allclose(mode[i], rtol: 0, atol: 0), $"gradient {i} changed");
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
        Assert.Contains("embedding lookup's backward failed: injected", e.Message);
        m.BeforeLookupBackward = null;
        using (m.ForBackward()) // the failure is reported once; the next scope is clean
            Loss(m, 1).backward();
    }
}

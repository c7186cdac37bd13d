// The fused float32 RoPE (Util/FusedKernels.TryRope, src/native/fused_kernels.c): the queries' and keys' outputs
// and gradients equal the composite ops' (Qwen3Attention.Rope's formula) bit for bit, at the main job's shapes,
// Qwen3-0.6B's head_dim, a decoding step and tables shared across the batch, with the layouts the attention gets
// (queries [B, H, T, D] contiguous, keys as libtorch lays them out); the no-grad path gives the same bits; second
// derivatives match; what the kernel cannot take falls back (null); and a loop of passes leaves no tensor behind.
using TorchSharp;
using Workbook;
using static TorchSharp.torch;

namespace Workbook.Tests;

public class FusedRopeTests
{
    static bool Off => FusedKernels.State.StartsWith("off (");

    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    /// <summary>The model's tables for positions 0..T−1 (offset per batch row, as left padding does): cos and
    /// sin with its first half negated, [B or 1, 1, T, D].</summary>
    static (Tensor Cos, Tensor Sin) Tables(long b, long t, long d)
    {
        using Scalar first = 0,
            bb = b,
            tt = t,
            one = 1.0;
        var pos = arange(first, tt, one, dtype: ScalarType.Float32)
            .unsqueeze(0)
            .Plus(arange(first, bb, one, dtype: ScalarType.Float32).unsqueeze(1));
        var inv = tensor(
            Enumerable.Range(0, (int)d / 2).Select(i => (float)(1 / Math.Pow(1e6, 2.0 * i / d))).ToArray()
        );
        var freqs = pos.unsqueeze(-1) * inv;
        var sinHalf = freqs.sin();
        return (cat([freqs, freqs], -1).cos().unsqueeze(1), cat([-sinHalf, sinHalf], -1).unsqueeze(1));
    }

    static Tensor Composite(Tensor x, Tensor cos, Tensor sin) => (x * cos).Plus(x.roll(x.size(3) / 2, -1) * sin);

    [Theory]
    [InlineData(32, 72, 4, 2, 24, false)] // a main-job SFT step
    [InlineData(2, 9, 16, 8, 128, false)] // Qwen3-0.6B's heads
    [InlineData(64, 1, 4, 2, 24, false)] // a decoding step
    [InlineData(3, 7, 4, 2, 24, true)] // one table for every row
    public void Fused_rope_gives_the_composite_ops_bits_forward_and_backward(
        int b,
        int t,
        int heads,
        int kvHeads,
        int d,
        bool sharedTable
    )
    {
        if (Off)
            return;
        Assert.True(FusedKernels.Enabled, FusedKernels.State);
        using var _ = NewDisposeScope();
        var (cos, sin) = Tables(sharedTable ? 1 : b, t, d);
        // as the attention gets them: projections [B, T, H, D] viewed as [B, H, T, D]
        var qm = TestData.Randn([b, t, heads, d], 61);
        var km = TestData.Randn([b, t, kvHeads, d], 62);
        var gq = TestData.Randn([b, heads, t, d], 63);
        // non-contiguous incoming gradients: the keys' with its rows strided (the kernel then takes a copy)
        var gk = TestData.Randn([b, kvHeads, d, t], 64).transpose(2, 3);
        Assert.True(t == 1 || gk.stride(3) != 1);
        (Tensor Q, Tensor K, Tensor Gq, Tensor Gk) Run(bool fused)
        {
            var q = qm.detach().requires_grad_(true);
            var k = km.detach().requires_grad_(true);
            Tensor rq,
                rk;
            if (fused)
                (rq, rk) = FusedKernels.TryRope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)!.Value;
            else
                (rq, rk) = (Composite(q.transpose(1, 2), cos, sin), Composite(k.transpose(1, 2), cos, sin));
            autograd.backward([rq, rk], [gq, gk]);
            return (rq.detach(), rk.detach(), q.grad!, k.grad!);
        }
        var f = Run(true);
        var c = Run(false);
        Assert.True(Same(f.Q, c.Q), "queries");
        Assert.True(Same(f.K, c.K), "keys");
        Assert.True(Same(f.Gq, c.Gq), "queries' gradient");
        Assert.True(Same(f.Gk, c.Gk), "keys' gradient");
        Assert.True(f.Q.is_contiguous()); // the attention's grouped view of the queries is free
        // the keys keep the composite's layout (a dimension of size 1 has no layout)
        var sized = Enumerable.Range(0, 4).Where(i => f.K.size(i) > 1).ToArray();
        Assert.Equal(sized.Select(i => c.K.stride(i)), sized.Select(i => f.K.stride(i)));
        Assert.True(f.Gq.abs().max().item<float>() > 0.1f); // not vacuous
        using (no_grad())
        {
            var (nq, nk) = FusedKernels.TryRope(qm.transpose(1, 2), km.transpose(1, 2), cos, sin)!.Value;
            Assert.True(Same(nq, c.Q) && Same(nk, c.K), "the no-grad path");
        }
    }

    [Fact]
    public void Second_derivatives_through_the_fused_rope_are_the_composites()
    {
        if (Off)
            return;
        using var _ = NewDisposeScope();
        var (cos, sin) = Tables(2, 5, 24);
        var c = TestData.Randn([2, 4, 5, 24], 71);
        var v = TestData.Randn([2, 5, 4, 24], 72);
        Tensor Hv(bool fused)
        {
            var q = TestData.Randn([2, 5, 4, 24], 73).requires_grad_(true);
            var k = TestData.Randn([2, 5, 2, 24], 74);
            var rq = fused
                ? FusedKernels.TryRope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)!.Value.Q
                : Composite(q.transpose(1, 2), cos, sin);
            var f = rq.mul(rq).mul(c).sum();
            var g = autograd.grad([f], [q], retain_graph: true, create_graph: true)[0];
            return autograd.grad([g.mul(v).sum()], [q])[0].detach();
        }
        var fused = Hv(true);
        var composite = Hv(false);
        Assert.InRange((fused - composite).abs().max().item<float>(), 0, 1e-6f * composite.abs().max().item<float>());
        Assert.True(composite.abs().max().item<float>() > 1e-2f); // not vacuous
    }

    [Fact]
    public void What_the_kernel_cannot_take_falls_back_to_the_callers_path()
    {
        if (Off)
            return;
        using var _ = NewDisposeScope();
        var (cos, sin) = Tables(2, 5, 24);
        var q = TestData.Randn([2, 4, 5, 24], 81);
        var k = TestData.Randn([2, 2, 5, 24], 82);
        Assert.NotNull(FusedKernels.TryRope(q, k, cos, sin));
        Assert.Null(FusedKernels.TryRope(q.to(ScalarType.Float64), k, cos, sin)); // another dtype
        var (cos3, sin3) = Tables(2, 5, 23);
        Assert.Null(FusedKernels.TryRope(q[.., .., .., ..23], k[.., .., .., ..23], cos3, sin3)); // odd head_dim
        Assert.Null(FusedKernels.TryRope(q, k, cos.detach().requires_grad_(true), sin)); // a table needing a gradient
        Assert.Null(FusedKernels.TryRope(q, k, cos[.., .., ..4], sin[.., .., ..4])); // tables of other positions
        var (cos3Rows, sin3Rows) = Tables(3, 5, 24);
        Assert.Null(FusedKernels.TryRope(q, k, cos3Rows, sin3Rows)); // tables of another batch
        // keys expanded over the query heads: their gradient could not take their (overlapping) layout
        Assert.Null(FusedKernels.TryRope(q, k[.., ..1].expand(2, 4, 5, 24), cos, sin));
        Assert.Null(FusedKernels.TryRope(q[..0], k[..0], cos[..0], sin[..0])); // empty
        using (FusedKernels.Suspend())
            Assert.Null(FusedKernels.TryRope(q, k, cos, sin));
    }

    /// <summary>Only the keys used, the function's outputs made in a dispose scope that ends before the backward
    /// (as in Qwen3Attention.forward): the keys get the composite's gradient, the queries none.</summary>
    [Fact]
    public void An_unused_output_gets_no_gradient_and_the_other_the_composites()
    {
        if (Off)
            return;
        using var _ = NewDisposeScope();
        var (cos, sin) = Tables(2, 5, 24);
        var qm = TestData.Randn([2, 5, 4, 24], 101);
        var km = TestData.Randn([2, 5, 2, 24], 102);
        var g = TestData.Randn([2, 2, 5, 24], 103);
        Tensor Keys(Tensor q, Tensor k, bool fused)
        {
            using var scope = NewDisposeScope();
            var rk = fused
                ? FusedKernels.TryRope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)!.Value.K
                : Composite(k.transpose(1, 2), cos, sin);
            return rk.MoveToOuterDisposeScope();
        }
        var q1 = qm.detach().requires_grad_(true);
        var k1 = km.detach().requires_grad_(true);
        Keys(q1, k1, true).backward([g]);
        var k2 = km.detach().requires_grad_(true);
        Keys(qm, k2, false).backward([g]);
        Assert.Null(q1.grad);
        Assert.True(Same(k1.grad!, k2.grad!));
    }

    [Fact]
    public void Forward_and_backward_passes_leave_no_tensor_behind()
    {
        if (Off)
            return;
        var (cos, sin) = Tables(3, 6, 24);
        using var qm = TestData.Randn([3, 6, 4, 24], 91);
        using var km = TestData.Randn([3, 6, 2, 24], 92);
        void Step()
        {
            using var scope = NewDisposeScope();
            var q = qm.detach().requires_grad_(true);
            var k = km.detach().requires_grad_(true);
            var (rq, rk) = FusedKernels.TryRope(q.transpose(1, 2), k.transpose(1, 2), cos, sin)!.Value;
            rq.sum().Plus(rk.sum()).backward();
        }
        Step();
        var before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 50; i++)
            Step();
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
        cos.Dispose();
        sin.Dispose();
    }
}

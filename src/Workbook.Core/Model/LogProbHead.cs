// The tied head and log-softmax of a completion's tokens in one function, a few positions at a time, for big tied
// heads inside ForBackward (GRPO's loss; Liger's fused linear cross-entropy does the same for the NLL). Why: the
// plain path keeps [positions, vocabulary] float32 logits, their log-softmax and, in the backward, two gradients of
// that size; at Qwen3-0.6B's 151,936 tokens one 256-token row is 156 MB each, the largest transient of a GRPO step
// once its layers are checkpointed. Here:
//  1. forward takes the positions in chunks (ChunkBytes of float32 logits each): logits h·Wᵀ (float32), divided by
//     the temperature, log-softmax, the chosen token's log-probability and (a metric, no gradient) the entropy; only
//     h and the targets are kept;
//  2. backward recomputes each chunk's log-softmax p and makes the logits' gradient g·(onehot − p)/T, then returns
//     its product with W for h and adds its product with h into W's .grad in place, as TiedHead does.
// Each position's values come from the same operations as the plain path's, row by row; the products run over other
// shapes, so rounding can differ (tested against the plain path). Only right for loss.backward(), as TiedHead.
using TorchSharp;
using static TorchSharp.torch;

namespace Workbook.Model;

sealed class LogProbHead : autograd.SingleTensorFunction<LogProbHead>
{
    /// <summary>Bytes of float32 logits per chunk of positions (the backward holds about four such tensors).</summary>
    public const long ChunkBytes = 32L << 20;

    /// <summary>The weight, the temperature, and the entropy per position that forward leaves here when asked.
    /// </summary>
    internal sealed class Call(EmbeddingLookupIntoGrad.Weight weight, double temperature, bool entropy, long chunk)
    {
        /// <summary>Positions per chunk.</summary>
        public long Chunk => chunk;
        public EmbeddingLookupIntoGrad.Weight Weight => weight;
        public double Temperature => temperature;
        public bool WantsEntropy => entropy;
        public Tensor? Entropy;
    }

    public override string Name => nameof(LogProbHead);

    /// <summary>Positions per chunk at <paramref name="vocab"/> for <paramref name="bytes"/> of float32 logits.
    /// </summary>
    public static long Chunk(long vocab, long bytes) => Math.Max(1, bytes / (vocab * sizeof(float)));

    /// <summary>Logits of <paramref name="h"/> [K, hidden] in float32 over the temperature, log-softmaxed.</summary>
    static Tensor LogSoftmax(Tensor h, Tensor w, double temperature)
    {
        var z = h.matmul(w.t());
        if (z.dtype != ScalarType.Float64)
            z = z.to(ScalarType.Float32);
        if (temperature != 1.0)
            using (Scalar t = temperature) // named: an implicit Scalar may be finalized mid-call
                z = z / t;
        return z.log_softmax(-1);
    }

    /// <summary>vars: the <see cref="Call"/>, the hidden states [N, C, hidden], the target ids [N, C] and the anchor.
    /// </summary>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var call = (Call)vars[0];
        Tensor h = (Tensor)vars[1],
            targets = (Tensor)vars[2];
        ctx.save_data("call", call);
        ctx.save_for_backward([h, targets]);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var w = call.Weight.Get().detach();
        var h2 = h.detach().reshape(-1, w.size(1));
        var t2 = targets.reshape(-1, 1);
        long m = h2.size(0),
            k = call.Chunk;
        var lp = new List<Tensor>();
        var ent = new List<Tensor>();
        for (long i = 0; i < m; i += k)
        {
            using var chunk = NewDisposeScope();
            long n = Math.Min(k, m - i);
            var logp = LogSoftmax(h2.narrow(0, i, n), w, call.Temperature);
            lp.Add(logp.gather(-1, t2.narrow(0, i, n)).squeeze(-1).MoveToOuterDisposeScope());
            if (call.WantsEntropy)
                ent.Add((-(logp.exp() * logp).sum(-1)).MoveToOuterDisposeScope());
        }
        if (call.WantsEntropy) // into the caller's scope, as the output
            call.Entropy = cat(ent, 0).view(targets.shape).MoveToOuterDisposeScope();
        return cat(lp, 0).view(targets.shape).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var call = (Call)ctx.get_data("call");
        var gradH = GuardedBackward.Run(
            ctx,
            call.Weight.BeforeBackward,
            saved =>
            {
                using var _ = no_grad();
                using var scope = NewDisposeScope();
                var w = call.Weight.Get();
                var h2 = saved[0].reshape(-1, w.size(1));
                var t2 = saved[1].reshape(-1, 1);
                var g2 = gradOutput.reshape(-1, 1);
                long m = h2.size(0),
                    k = call.Chunk;
                var gh = empty_like(h2);
                using Scalar invT = 1.0 / call.Temperature;
                for (long i = 0; i < m; i += k)
                {
                    using var chunk = NewDisposeScope();
                    long n = Math.Min(k, m - i);
                    var hc = h2.narrow(0, i, n);
                    var g = g2.narrow(0, i, n);
                    // d lp / d z = onehot − softmax: −p·g everywhere, + g at the chosen token
                    var p = LogSoftmax(hc, w, call.Temperature).exp_();
                    var gc = g.to(p.dtype);
                    var gz = p.mul_(gc.neg()).scatter_add_(-1, t2.narrow(0, i, n), gc);
                    if (call.Temperature != 1.0)
                        gz.mul_(invT);
                    gz = gz.to(w.dtype);
                    gh.narrow(0, i, n).copy_(gz.matmul(w));
                    GuardedBackward.AddWeightGrad(w, gz, hc);
                }
                return gh.view(saved[0].shape).MoveToOuterDisposeScope();
            },
            e => call.Weight.Error ??= e
        );
        return [null!, gradH, null!, null!];
    }
}

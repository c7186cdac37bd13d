// The head (logits = h·Wᵀ) of a model whose head is tied to its input embedding, built so that its backward adds
// the weight's gradient Gᵀ·h into the weight's .grad in place: the counterpart of EmbeddingLookupIntoGrad. Why:
// autograd's linear makes the weight's gradient as a fresh vocabulary × hidden tensor (622 MB at 0.6B scale) at every
// backward. A large model's optimizer keeps that gradient from step to step (Training/AdamW.cs, KeepGradsFrom), so a
// fresh one would be a transient beside it; made afresh each step instead, glibc sometimes carved it from the heap's
// free chunks and the step's peak rose by 0.58 GiB (README, Platform notes). Here:
//  1. forward computes h·Wᵀ with W detached; the node's differentiable inputs are h and the one-element anchor leaf;
//  2. backward returns G·W for h and adds Gᵀ·h into .grad (addmm_, or a fresh product when there is no .grad yet).
// With the lookup also in place the tied weight has no autograd use inside ForBackward, so its .grad is only written
// in place. Only right for loss.backward(), as the lookup; built only inside ForBackward, for big tied heads.
using TorchSharp;
using static TorchSharp.torch;

namespace Workbook.Model;

sealed class TiedHead : autograd.SingleTensorFunction<TiedHead>
{
    public override string Name => nameof(TiedHead);

    /// <summary>vars: the <see cref="EmbeddingLookupIntoGrad.Weight"/>, the hidden states [.., hidden] and the anchor.
    /// </summary>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var h = (Tensor)vars[1];
        ctx.save_data("weight", vars[0]);
        ctx.save_for_backward([h]);
        using var scope = NewDisposeScope();
        var w = ((EmbeddingLookupIntoGrad.Weight)vars[0]).Get();
        return nn.functional.linear(h.detach(), w.detach()).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var weight = (EmbeddingLookupIntoGrad.Weight)ctx.get_data("weight");
        var gradH = GuardedBackward.Run(
            ctx,
            weight.BeforeBackward,
            saved =>
            {
                using var _ = no_grad();
                using var scope = NewDisposeScope();
                var w = weight.Get();
                var h = saved[0];
                GuardedBackward.AddWeightGrad(w, gradOutput.reshape(-1, w.shape[0]), h.reshape(-1, w.shape[1]));
                return gradOutput.matmul(w).MoveToOuterDisposeScope();
            },
            e => weight.Error ??= e
        );
        return [null!, gradH, null!];
    }
}

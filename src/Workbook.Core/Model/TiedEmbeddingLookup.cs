// The input embedding's lookup for a model whose head is tied to it, built so that its backward adds the looked-up
// rows' gradients into the weight's .grad in place. Why: autograd gives a leaf used twice one gradient per use and
// sums them, so the lookup's backward makes a dense vocabulary × hidden zeros-plus-rows gradient beside the head's
// (at 0.6B scale 622 MB, one of the two transients of that size that set a training step's peak). Here:
//  1. forward indexes the weight detached; the node's only differentiable input is a one-element anchor leaf, so the
//     head's gradient reaches the weight's AccumulateGrad alone and is stored as .grad as soon as it is computed;
//  2. backward index_adds the rows into that .grad and returns no gradient for its inputs. With one forward the
//     lookup's backward runs last, after every layer's and the head's (so after the head's AccumulateGrad). A loss
//     made of two forwards (GRPO with its SFT term), or a forward with two lookups (the shared-prompt forward's
//     prompt and completion passes, Model/SharedPrefix.cs), can run a lookup's backward before a head's gradient
//     arrives: then .grad starts as zeros and AccumulateGrad adds the heads' gradient to it, still right.
// So it is only right for loss.backward(): autograd.grad would see no lookup term and .grad would change. The model
// builds it only inside Qwen3ForCausalLM.ForBackward() and only for big tied heads.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Workbook.Model;

sealed class TiedEmbeddingLookup : autograd.SingleTensorFunction<TiedEmbeddingLookup>
{
    /// <summary>The embedding module, read again in backward: a weight wrapper taken in forward belongs to the
    /// forward's dispose scope.</summary>
    internal sealed class Weight(Embedding module)
    {
        public Tensor Get() => module.weight!;

        /// <summary>The first failure of a backward: an exception thrown into libtorch's engine from a managed
        /// backward ends the process, so it is kept here and rethrown when the ForBackward scope closes.</summary>
        public Exception? Error;

        /// <summary>Called at the start of each backward (tests inject a failure here).</summary>
        public Action? BeforeBackward;
    }

    public override string Name => nameof(TiedEmbeddingLookup);

    /// <summary>vars: the <see cref="Weight"/>, the ids [B, T] and the anchor leaf.</summary>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var ids = (Tensor)vars[1];
        ctx.save_data("weight", vars[0]);
        ctx.save_for_backward([ids]);
        using var scope = NewDisposeScope();
        var w = ((Weight)vars[0]).Get();
        return w.detach().index_select(0, ids.reshape(-1)).view([.. ids.shape, w.size(1)]).MoveToOuterDisposeScope();
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var weight = (Weight)ctx.get_data("weight");
        try
        {
            weight.BeforeBackward?.Invoke();
            using var _ = no_grad();
            using var scope = NewDisposeScope();
            var w = weight.Get();
            var ids = ctx.get_saved_variables()[0];
            if (w.grad is null)
            {
                // set_grad takes its own reference: this wrapper is disposed with the scope, not left to the finalizer
                var zero = zeros_like(w);
                w.grad = zero;
            }
            w.grad!.index_add_(0, ids.reshape(-1), gradOutput.reshape(-1, w.shape[1]).to(w.dtype), HeldScalars.One);
        }
        catch (Exception e)
        {
            weight.Error ??= e;
        }
        return [null!, null!, null!];
    }
}

// The input embedding's lookup for a big embedding, built so that its backward adds the looked-up rows' gradients
// into the weight's .grad in place. Why: the plain lookup's backward makes a dense vocabulary × hidden zeros-plus-rows
// gradient (622 MB at 0.6B scale): beside the head's when the head is tied (autograd gives a leaf used twice one
// gradient per use and sums them), and beside a kept .grad (Training/AdamW.cs, KeepGradsFrom) in any case. Here:
//  1. forward indexes the weight detached; the node's only differentiable input is a one-element anchor leaf;
//  2. backward index_adds the rows into .grad and returns no gradient for its inputs; where there is no .grad yet (a
//     dropped gradient, or a lookup's backward that runs before any head's, as in a loss made of two forwards), it
//     starts from zeros.
// It is built only inside Qwen3ForCausalLM.ForBackward() and only for big embeddings; a tied head's own gradient is
// added in place too (Model/TiedHead.cs), so the weight has no autograd use left and its .grad is written in place
// whatever the order of the backwards. So it is only right for loss.backward(): autograd.grad would see no path to
// the weight.
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Workbook.Model;

sealed class EmbeddingLookupIntoGrad : autograd.SingleTensorFunction<EmbeddingLookupIntoGrad>
{
    /// <summary>The embedding module, read again in backward: a weight wrapper taken in forward belongs to the
    /// forward's dispose scope.</summary>
    internal sealed class Weight(Embedding module)
    {
        public Tensor Get() => module.weight!;

        /// <summary>The first failure of a backward: an exception thrown into libtorch's engine from a managed
        /// backward ends the process, so it is kept here and rethrown when the ForBackward scope closes.</summary>
        public Exception? Error;

        /// <summary>Called at the start of each backward, the head's (<see cref="TiedHead"/>) too (tests inject a
        /// failure here).</summary>
        public Action? BeforeBackward;
    }

    public override string Name => nameof(EmbeddingLookupIntoGrad);

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

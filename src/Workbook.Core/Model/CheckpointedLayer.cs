// Gradient checkpointing of one decoder layer (TRL's gradient_checkpointing; PyTorch's reentrant checkpoint):
//  1. forward runs the layer without autograd and keeps only its input (and the RoPE tables and the mask it reads);
//  2. backward runs the layer again with autograd from a detached copy of that input and back-propagates the incoming
//     gradient through it: the parameters' gradients accumulate into .grad as in a plain backward, and the input's
//     gradient goes on to the layer below.
// So a forward keeps hidden-size floats per token and layer instead of every activation of the layer (about 30 times
// as many at Qwen3-0.6B's shapes), at the price of a second forward of each layer in the backward. The recomputation
// runs the same kernels on the same inputs, so the gradients equal the plain ones (tested). Only right for
// loss.backward(): autograd.grad would not reach the parameters, so it is built only inside ForBackward, and never
// with a KV cache or shared prefix (whose keys must stay in the graph).
using TorchSharp;
using static TorchSharp.torch;

namespace Workbook.Model;

sealed class CheckpointedLayer : autograd.SingleTensorFunction<CheckpointedLayer>
{
    /// <summary>The layer, its index, and where a failure in backward is kept (it cannot cross libtorch's engine).
    /// </summary>
    internal sealed record Call(Qwen3DecoderLayer Layer, int Index, Qwen3ForCausalLM Model);

    public override string Name => nameof(CheckpointedLayer);

    /// <summary>vars: the <see cref="Call"/>, the hidden states [B, T, hidden], cos, sinSigned and the mask.</summary>
    public override Tensor forward(autograd.AutogradContext ctx, params object[] vars)
    {
        var call = (Call)vars[0];
        Tensor h = (Tensor)vars[1],
            cos = (Tensor)vars[2],
            sin = (Tensor)vars[3],
            mask = (Tensor)vars[4];
        ctx.save_data("call", call);
        ctx.save_for_backward([h, cos, sin, mask]);
        using var _ = no_grad();
        return call.Layer.forward(h.detach(), cos, sin, mask, null, call.Index);
    }

    public override List<Tensor> backward(autograd.AutogradContext ctx, Tensor gradOutput)
    {
        var call = (Call)ctx.get_data("call");
        var gradH = GuardedBackward.Run(
            ctx,
            call.Model.BeforeCheckpointBackward,
            saved =>
            {
                using var scope = NewDisposeScope();
                using var grad = enable_grad();
                var h = saved[0].detach().requires_grad_(true);
                var output = call.Layer.forward(h, saved[1], saved[2], saved[3], null, call.Index);
                output.backward([gradOutput]);
                return h.grad!.MoveToOuterDisposeScope();
            },
            call.Model.BackwardFailed
        );
        return [null!, gradH, null!, null!, null!];
    }
}

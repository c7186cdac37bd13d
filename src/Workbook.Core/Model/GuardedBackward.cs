// What the workbook's custom backwards (TiedHead, LogProbHead, CheckpointedLayer) share:
//  1. a managed exception thrown into libtorch's autograd engine ends the process, so a failure is kept for the
//     ForBackward scope to throw when it closes, and the input gets a zero gradient: a null one would be filled in
//     from the input's forward wrapper, disposed by then (a crash);
//  2. a weight's gradient added into its .grad in place (a fresh product where there is none yet).
using TorchSharp;
using static TorchSharp.torch;

namespace Workbook.Model;

static class GuardedBackward
{
    /// <summary>The input's gradient from <paramref name="body"/>, given the saved tensors (it moves its result out of
    /// any dispose scope it makes), or zeros like the first saved tensor (the input) after giving the failure to
    /// <paramref name="keep"/>. <paramref name="before"/> (a test hook) runs first, inside the guard, as does reading
    /// the saved tensors; only the zeros themselves are made outside it.</summary>
    public static Tensor Run(
        autograd.AutogradContext ctx,
        Action? before,
        Func<IList<Tensor>, Tensor> body,
        Action<Exception> keep
    )
    {
        try
        {
            before?.Invoke();
            return body(ctx.get_saved_variables());
        }
        catch (Exception e)
        {
            keep(e);
            using var _ = no_grad();
            return zeros_like(ctx.get_saved_variables()[0]);
        }
    }

    /// <summary>Adds gᵀ·h into <paramref name="w"/>'s .grad in place: g [K, out], h [K, in].</summary>
    public static void AddWeightGrad(Tensor w, Tensor g, Tensor h)
    {
        if (w.grad is null)
        {
            // set_grad takes its own reference: this wrapper is disposed with the caller's scope
            var fresh = g.t().mm(h);
            w.grad = fresh;
        }
        else
            w.grad!.addmm_(g.t(), h, beta: 1f, alpha: 1f);
    }
}

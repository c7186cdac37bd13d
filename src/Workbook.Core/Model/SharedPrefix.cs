// Groups of rows that share a prompt (GRPO's G completions of one prompt) in a forward that autograd differentiates:
// 1. the prompt pass runs the Bp distinct prompts once ([Bp, P]); each layer's keys and values are kept, in the graph;
// 2. the completion pass runs the N = Bp·G completions ([N, C]) against them: row j's keys are its prompt's (repeated
//    for the group by repeat_interleave, whose backward sums the G rows' gradients) followed by its own;
// 3. so each completion attends to the same keys, in the same order and at the same positions, as in the per-row
//    forward of prompt|completion: the same function, computed in fewer FLOPs (the prompt once per group, not G
//    times); rounding differs, since the products run over other shapes and the gradients are summed in another order.
using static TorchSharp.torch;

namespace Workbook.Model;

public sealed class SharedPrefix(int layers, int groupSize) : IKVCache, IDisposable
{
    readonly Tensor?[] keys = new Tensor?[layers],
        values = new Tensor?[layers];
    bool recorded,
        replayed;

    public long Length { get; private set; }
    public int GroupSize { get; } = groupSize;

    public (Tensor k, Tensor v) Append(int layer, Tensor k, Tensor v)
    {
        if (!recorded)
        {
            // the prompt pass: kept past the attention's dispose scope; the graph holds its own references
            keys[layer] = k.alias().DetachFromDisposeScope();
            values[layer] = v.alias().DetachFromDisposeScope();
            return (k, v);
        }
        if (replayed)
            throw new InvalidOperationException("shared prefix: one prompt pass, then one completion pass");
        var pk = keys[layer]!;
        if (pk.shape[0] * GroupSize != k.shape[0])
            throw new ArgumentException(
                $"shared prefix: {pk.shape[0]} prompts × group {GroupSize} ≠ {k.shape[0]} completion rows"
            );
        return (
            cat([pk.repeat_interleave(GroupSize, dim: 0), k], 2),
            cat([values[layer]!.repeat_interleave(GroupSize, dim: 0), v], 2)
        );
    }

    public void Advance(long t)
    {
        if (recorded)
            replayed = true; // the completion pass is over
        else
            (Length, recorded) = (t, true);
    }

    public void Dispose()
    {
        foreach (var t in keys.Concat(values))
            t?.Dispose();
    }
}

// Groups of rows that share a prompt (GRPO's G completions of one prompt) in a forward that autograd differentiates:
// 1. the prompt pass runs the Bp distinct prompts once ([Bp, P]); each layer's keys and values are kept, in the graph;
// 2. the completion pass runs the N = Bp·G completions ([N, C]) against them: row j's keys are its prompt's (repeated
//    for the group by repeat_interleave, whose backward sums the G rows' gradients) followed by its own;
// 3. so each completion attends to the same keys, in the same order and at the same positions, as in the per-row
//    forward of prompt|completion: the same function, computed in fewer FLOPs (the prompt once per group, not G
//    times); rounding differs, since the products run over other shapes and the gradients are summed in another order.
using static TorchSharp.torch;

namespace Workbook.Model;

public sealed class SharedPrefix : IKVCache, IDisposable
{
    readonly Tensor?[] keys,
        values;
    readonly int groupSize;
    bool recorded,
        replayed;

    SharedPrefix(int layers, int groupSize)
    {
        (keys, values, this.groupSize) = (new Tensor?[layers], new Tensor?[layers], groupSize);
    }

    /// <summary>The final hidden states of the prefix pass ([Bp, K, hidden]) and of the rows' pass ([Bp·G, T,
    /// hidden]), the rows attending to their group's prefix first. <paramref name="mask"/> covers prefix and row
    /// columns ([Bp·G, K + T]); null positions count real tokens, as <see cref="Qwen3ForCausalLM.HiddenStates"/>
    /// does.</summary>
    public static (Tensor Prefix, Tensor Rows) HiddenStates(
        Qwen3ForCausalLM model,
        int groupSize,
        (Tensor Ids, Tensor Mask, Tensor? Positions) prefix,
        (Tensor Ids, Tensor Mask, Tensor? Positions) rows
    )
    {
        using var cache = new SharedPrefix(model.Config.NumHiddenLayers, groupSize);
        var hp = model.HiddenStates(prefix.Ids, prefix.Mask, prefix.Positions, cache);
        return (hp, model.HiddenStates(rows.Ids, rows.Mask, rows.Positions, cache));
    }

    public long Length { get; private set; }

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
        if (pk.size(0) * groupSize != k.size(0))
            throw new ArgumentException(
                $"shared prefix: {pk.shape[0]} prompts × group {groupSize} ≠ {k.shape[0]} completion rows"
            );
        return (
            cat([pk.repeat_interleave(groupSize, dim: 0), k], 2),
            cat([values[layer]!.repeat_interleave(groupSize, dim: 0), v], 2)
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

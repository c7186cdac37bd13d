// A lower estimate of one training step's activation memory, so that a batch that cannot fit is refused before it is
// allocated (a per_device_train_batch_size of 100000 otherwise grows to tens of GB before failing):
// 1. per token and layer, what backward keeps at the least: ~4·hidden + 2·intermediate floats (attention and MLP
// inputs,     norms) plus the attention probabilities of each head over the row (heads·length);
//  2. per token, the logits and their log-softmax: 2·vocab floats;
//  with gradient checkpointing, only each layer's input (hidden floats per token and layer) plus one layer's share of
//  item 1 for the backward's recomputation; with the fused head (Model/LogProbHead.cs), no logits;
//  3. refused only when this lower estimate exceeds the memory the OS reports available (Linux MemAvailable), so a
//     config that runs is never refused; elsewhere the check is skipped.
using Workbook.Model;

namespace Workbook.Training;

public static class StepMemory
{
    /// <summary>Bytes of activations a forward and backward over rows × length tokens keeps at the least.</summary>
    public static double Estimate(
        Qwen3Config c,
        long rows,
        long length,
        int bytesPerElement = 4,
        bool checkpointing = false,
        bool fusedHead = false
    )
    {
        double layer = 4.0 * c.HiddenSize + 2.0 * c.IntermediateSize + (double)c.NumAttentionHeads * length;
        double perToken =
            (checkpointing ? c.NumHiddenLayers * (double)c.HiddenSize + layer : c.NumHiddenLayers * layer)
            + (fusedHead ? 0 : 2.0 * c.VocabSize);
        return perToken * rows * length * bytesPerElement;
    }

    /// <summary>Available memory in bytes (Linux MemAvailable), or null where unknown.</summary>
    public static double? Available()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/meminfo"))
                if (line.StartsWith("MemAvailable:"))
                    return double.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1]) * 1024;
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return null;
    }

    /// <summary>Refuses a step whose lower memory estimate exceeds <paramref name="available"/> (default: the OS's),
    /// naming the option that sets its size and, in <paramref name="remedy"/>, what keeps the step the same.</summary>
    public static void Check(
        Qwen3Config c,
        string option,
        long rows,
        long length,
        double? available = null,
        string remedy = "gradient_accumulation_steps keeps the effective batch",
        bool checkpointing = false,
        bool fusedHead = false
    )
    {
        var need = Estimate(c, rows, length, checkpointing: checkpointing, fusedHead: fusedHead);
        if ((available ?? Available()) is { } avail && need > avail)
            throw new WorkbookException(
                $"option {option}: one step of {rows} rows × {length} tokens needs at least {need / 1e9:0.#} GB of "
                    + $"activations, more than the {avail / 1e9:0.#} GB available; lower it ({remedy})"
            );
    }
}

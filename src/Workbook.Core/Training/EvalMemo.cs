// Evaluations that repeat within a run (issue 13). Every RL stage that starts from sft-then-rl's SFT model evaluates
// that model at its step 0 and draws its start samples from it, as sft-then-rl's SFT stage did at its last step; a
// stage that replays another's trajectory (StageReplay.cs) evaluates the same models at the steps both evaluate.
//  1. An evaluation is a function of the weights, the evaluator (its data, options and seed), the stage's start model
//     (eval_kl_from_start) and the CPU thread count; the fingerprint hashes the weights with the model's config,
//     dtype and thread count (SHA-256 of the parameters' bytes: about 1 ms for the main job's model).
//  2. A repeated evaluation returns a copy of the first one's metrics, and a repeated draw the first draw's
//     completions: the same numbers, without the forward passes and the sampling.
//  3. CPU only (the evaluator is told by its maker): there the same inputs give the same numbers.
using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Workbook.Model;
using static TorchSharp.torch;

namespace Workbook.Training;

public static class ModelFingerprint
{
    [ThreadStatic]
    static long computedOnThisThread;

    /// <summary>How many fingerprints this thread has computed: each reads every weight (about 1-2 s at 0.6B), so a
    /// stage computes one per model it evaluates, and one for its start however many readers it has.</summary>
    public static long ComputedOnThisThread => computedOnThisThread;

    /// <summary>SHA-256 (hex) of the model's config, dtype, the torch thread count and every parameter's name, shape
    /// and bytes. Two models with the same fingerprint compute the same numbers on the same CPU.</summary>
    public static string Of(Qwen3ForCausalLM model)
    {
        computedOnThisThread++;
        using var h = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        h.AppendData(
            Encoding.UTF8.GetBytes($"{model.Config.ToJson()}|{model.DType}|{model.Device}|{get_num_threads()}")
        );
        foreach (var (name, p) in model.named_parameters())
        {
            h.AppendData(Encoding.UTF8.GetBytes($"|{name}:{string.Join(',', p.shape)}:"));
            using var scope = NewDisposeScope(); // the detached view and any copy
            h.AppendData(p.detach().to(CPU).contiguous().bytes);
        }
        return Convert.ToHexStringLower(h.GetHashAndReset());
    }
}

/// <summary>An evaluator's results and draws by fingerprint (thread-safe: seeds run on parallel threads). Bounded:
/// past <see cref="MaxEntries"/> entries it starts again empty.</summary>
sealed class EvalMemo
{
    public const int MaxEntries = 4096;
    readonly ConcurrentDictionary<string, Dictionary<string, double>> results = new();
    readonly ConcurrentDictionary<string, List<Completion>> draws = new();

    public int Hits;

    public bool TryResult(string key, out Dictionary<string, double> m)
    {
        if (results.TryGetValue(key, out var r))
        {
            Interlocked.Increment(ref Hits);
            m = new(r);
            return true;
        }
        m = null!;
        return false;
    }

    public void AddResult(string key, Dictionary<string, double> m)
    {
        if (results.Count >= MaxEntries)
            results.Clear();
        results[key] = new(m);
    }

    public bool TryDraw(string key, out List<Completion> drawn)
    {
        if (draws.TryGetValue(key, out var d))
        {
            Interlocked.Increment(ref Hits);
            drawn = [.. d];
            return true;
        }
        drawn = null!;
        return false;
    }

    public void AddDraw(string key, List<Completion> drawn)
    {
        if (draws.Count >= MaxEntries)
            draws.Clear();
        draws[key] = [.. drawn];
    }
}

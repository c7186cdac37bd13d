// Checkpoints: <run>/checkpoints/step-000123/ holds the model in Hugging Face layout (config.json + model.safetensors,
// loadable by `--model`), the optimizer state and trainer_state.json. A checkpoint is written into a hidden temp folder
// and renamed into place when complete, so a killed run never leaves a half-written checkpoint that resume would pick
// up. Each checkpoint's health.json says whether its weights are sane (finite, max |w| not orders of magnitude above
// the run's start, the step's gradient norm not orders above the run's first ones): the non-finite guard names the last
// good one, pruning never deletes it, and a resume starts from it (dropping the exploded checkpoints after it).
using System.Text.Json;
using Workbook.Model;

namespace Workbook.Training;

public sealed record TrainerState(long Step, int Epoch, int Cursor, long NumTokens, long Seed, string Trainer);

/// <summary>What a checkpoint's weights looked like when it was saved (health.json): the largest |weight|, the step's
/// gradient norm before clipping, the run's references for both, and whether that makes it a good resume
/// point.</summary>
public sealed record CheckpointHealth(
    double MaxAbsWeight,
    double GradNorm,
    double StartMaxAbsWeight,
    double? StartGradNorm,
    bool Good,
    string? Problem
)
{
    /// <summary>How far max |w| may grow above max(1, its value at the run's start) before the weights count as
    /// exploded (healthy training moves it by a small factor; a blow-up by many orders of magnitude).</summary>
    public const double WeightGrowth = 100;

    /// <summary>How far the gradient norm may grow above the median of the run's first ones.</summary>
    public const double GradGrowth = 1e4;

    public static CheckpointHealth Judge(double maxAbs, double gradNorm, double startMaxAbs, double? startGrad)
    {
        string? problem =
            !double.IsFinite(maxAbs) ? "non-finite weights"
            : maxAbs > WeightGrowth * Math.Max(1, startMaxAbs)
                ? $"max |w| {maxAbs:G3} is over {WeightGrowth:G0}x the run's start ({startMaxAbs:G3})"
            : !double.IsFinite(gradNorm) ? "non-finite gradient norm"
            : startGrad is > 0 && gradNorm > GradGrowth * startGrad.Value
                ? $"gradient norm {gradNorm:G3} is over {GradGrowth:G0}x the run's first ones ({startGrad:G3})"
            : null;
        return new(maxAbs, gradNorm, startMaxAbs, startGrad, problem is null, problem);
    }

    /// <summary>max |w| over the model's parameters (NaN if any is NaN), without a copy of any weight.</summary>
    public static double MaxAbsOf(Qwen3ForCausalLM model)
    {
        using var _ = TorchSharp.torch.no_grad();
        double m = 0;
        foreach (var p in model.parameters())
        {
            if (p.numel() == 0)
                continue;
            using var hi = p.max();
            using var lo = p.min();
            double a = Math.Max(Math.Abs(hi.Value()), Math.Abs(lo.Value()));
            if (double.IsNaN(a))
                return double.NaN;
            m = Math.Max(m, a);
        }
        return m;
    }
}

public static class TrainerCheckpoint
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    // health.json may hold NaN or Infinity (an exploded checkpoint's max |w|)
    static readonly JsonSerializerOptions HealthJson = new(Json)
    {
        NumberHandling = System.Text.Json.Serialization.JsonNumberHandling.AllowNamedFloatingPointLiterals,
    };

    public const string HealthFile = "health.json";

    public static string Save(
        string runDir,
        Qwen3ForCausalLM model,
        AdamW opt,
        TrainerState state,
        int keepLast = 2,
        CheckpointHealth? health = null,
        IReadOnlyList<(string File, AdamW Optimizer)>? more = null
    )
    {
        var root = Path.Combine(runDir, "checkpoints");
        Directory.CreateDirectory(root);
        var final = Path.Combine(root, $"step-{state.Step:D6}");
        var tmp = Path.Combine(root, WorkFolders.Name("step", $"{state.Step:D6}"));
        Directory.CreateDirectory(tmp);
        Checkpoint.Save(model, tmp);
        // issue 12: a checkpoint of a compact-vocabulary model carries its vocab.json, so it works as --model
        if (File.Exists(Path.Combine(runDir, "vocab.json")))
            File.Copy(Path.Combine(runDir, "vocab.json"), Path.Combine(tmp, "vocab.json"));
        opt.Save(Path.Combine(tmp, OptimizerFile));
        foreach (var (file, o) in more ?? [])
            o.Save(Path.Combine(tmp, file));
        if (health is not null)
            File.WriteAllText(Path.Combine(tmp, HealthFile), JsonSerializer.Serialize(health, HealthJson));
        File.WriteAllText(Path.Combine(tmp, "trainer_state.json"), JsonSerializer.Serialize(state, Json));
        if (Directory.Exists(final))
            Directory.Delete(final, true);
        Directory.Move(tmp, final);
        var good = LatestGood(runDir); // kept beyond keepLast: the resume point if the newer ones exploded
        foreach (var old in Complete(runDir).SkipLast(Math.Max(1, keepLast)).Where(d => d != good))
            Remove(old);
        return final;
    }

    /// <summary>Deletes a checkpoint, its trainer state first: a kill mid-delete leaves an incomplete folder, which
    /// resume ignores and the next start removes.</summary>
    public static void Remove(string dir)
    {
        File.Delete(Path.Combine(dir, "trainer_state.json"));
        Directory.Delete(dir, true);
    }

    /// <summary>A checkpoint's health.json; null for a checkpoint written before health was recorded.</summary>
    public static CheckpointHealth? Health(string dir)
    {
        var path = Path.Combine(dir, HealthFile);
        if (!File.Exists(path))
            return null;
        try
        {
            return JsonSerializer.Deserialize<CheckpointHealth>(File.ReadAllText(path), HealthJson);
        }
        catch (JsonException e)
        {
            throw new WorkbookException($"{path}: unreadable checkpoint health ({e.Message})");
        }
    }

    /// <summary>The latest complete checkpoint whose weights are good (one without health.json counts as
    /// good).</summary>
    public static string? LatestGood(string runDir) => Complete(runDir).LastOrDefault(d => Health(d)?.Good != false);

    /// <summary>The step a checkpoint folder holds (step-000123 -> 123).</summary>
    public static long StepOf(string dir) => long.Parse(Path.GetFileName(dir)["step-".Length..]);

    /// <summary>Complete checkpoints, oldest first (temp folders of interrupted writes are ignored).</summary>
    public static List<string> Complete(string runDir)
    {
        var root = Path.Combine(runDir, "checkpoints");
        if (!Directory.Exists(root))
            return [];
        return Directory
            .GetDirectories(root, "step-*")
            .Where(d => File.Exists(Path.Combine(d, "trainer_state.json")))
            .Order(StringComparer.Ordinal)
            .ToList();
    }

    public static string? Latest(string runDir) => Complete(runDir).LastOrDefault();

    /// <summary>Deletes the optimizer state of a finished stage's checkpoints (the weights stay). Only for stages
    /// marked done: their checkpoints can no longer resume training.</summary>
    public static void DropOptimizerState(string runDir)
    {
        if (!File.Exists(Path.Combine(runDir, "done.json")))
            throw new InvalidOperationException($"{runDir}: not finished; its optimizer state is its resume point");
        foreach (var d in Complete(runDir))
        foreach (var f in Directory.GetFiles(d, "optimizer*.safetensors"))
            File.Delete(f);
    }

    public const string OptimizerFile = "optimizer.safetensors";

    public static TrainerState Load(
        string dir,
        Qwen3ForCausalLM model,
        AdamW opt,
        IReadOnlyList<(string File, AdamW Optimizer)>? more = null
    )
    {
        foreach (var file in (more ?? []).Select(x => x.File).Prepend(OptimizerFile))
            if (!File.Exists(Path.Combine(dir, file)))
                throw new WorkbookException(
                    $"{dir}: no {file}; a run drops it when the stage finishes, so this checkpoint cannot resume "
                        + "training (its weights load as --model)"
                );
        var statePath = Path.Combine(dir, "trainer_state.json");
        TrainerState state;
        try
        {
            state = JsonSerializer.Deserialize<TrainerState>(File.ReadAllText(statePath))!;
        }
        catch (JsonException e)
        {
            throw new WorkbookException($"{statePath}: unreadable trainer state ({e.Message})");
        }
        Checkpoint.LoadWeights(model, Checkpoint.WeightFiles(dir));
        opt.Load(Path.Combine(dir, OptimizerFile));
        foreach (var (file, o) in more ?? [])
            o.Load(Path.Combine(dir, file));
        return state;
    }

    /// <summary>Deletes leftovers of interrupted checkpoint writes: temp folders whose process is gone, and step
    /// folders without a trainer state (a kill while pruning an old checkpoint can leave one half-deleted).</summary>
    public static void CleanTemp(string runDir)
    {
        var root = Path.Combine(runDir, "checkpoints");
        if (!Directory.Exists(root))
            return;
        WorkFolders.RemoveAbandoned(root, ".tmp-*");
        foreach (var d in Directory.GetDirectories(root, "step-*"))
            if (!File.Exists(Path.Combine(d, "trainer_state.json")))
                Directory.Delete(d, true);
    }
}

// Checkpoints: <run>/checkpoints/step-000123/ holds the model in Hugging Face layout (config.json + model.safetensors,
// loadable by `--model`), the optimizer state and trainer_state.json. A checkpoint is written into a hidden temp folder
// and renamed into place when complete, so a killed run never leaves a half-written checkpoint that resume would pick up.
using System.Text.Json;
using Workbook.Model;

namespace Workbook.Training;

public sealed record TrainerState(long Step, int Epoch, int Cursor, long NumTokens, long Seed, string Trainer);

public static class TrainerCheckpoint
{
    static readonly JsonSerializerOptions Json = new() { WriteIndented = true };

    public static string Save(string runDir, Qwen3ForCausalLM model, AdamW opt, TrainerState state, int keepLast = 2)
    {
        var root = Path.Combine(runDir, "checkpoints");
        Directory.CreateDirectory(root);
        var final = Path.Combine(root, $"step-{state.Step:D6}");
        var tmp = Path.Combine(root, $".tmp-step-{state.Step:D6}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(tmp);
        Checkpoint.Save(model, tmp);
        // issue 12: a checkpoint of a compact-vocabulary model carries its vocab.json, so it works as --model
        if (File.Exists(Path.Combine(runDir, "vocab.json")))
            File.Copy(Path.Combine(runDir, "vocab.json"), Path.Combine(tmp, "vocab.json"));
        opt.Save(Path.Combine(tmp, "optimizer.safetensors"));
        File.WriteAllText(Path.Combine(tmp, "trainer_state.json"), JsonSerializer.Serialize(state, Json));
        if (Directory.Exists(final))
            Directory.Delete(final, true);
        Directory.Move(tmp, final);
        foreach (var old in Complete(runDir).SkipLast(Math.Max(1, keepLast)))
        {
            File.Delete(Path.Combine(old, "trainer_state.json")); // first: a kill mid-delete leaves an incomplete folder
            Directory.Delete(old, true);
        }
        return final;
    }

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

    public static TrainerState Load(string dir, Qwen3ForCausalLM model, AdamW opt)
    {
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
        opt.Load(Path.Combine(dir, "optimizer.safetensors"));
        return state;
    }

    /// <summary>Deletes leftovers of interrupted checkpoint writes: temp folders, and step folders without a trainer
    /// state (a kill while pruning an old checkpoint can leave one half-deleted).</summary>
    public static void CleanTemp(string runDir)
    {
        var root = Path.Combine(runDir, "checkpoints");
        if (!Directory.Exists(root))
            return;
        foreach (var d in Directory.GetDirectories(root, ".tmp-*"))
            Directory.Delete(d, true);
        foreach (var d in Directory.GetDirectories(root, "step-*"))
            if (!File.Exists(Path.Combine(d, "trainer_state.json")))
                Directory.Delete(d, true);
    }
}

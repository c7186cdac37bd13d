// What the kill-and-resume tests of every trainer share: a crash right after a given step (to the run folder, the same
// as the process dying there) and a run's logged metrics in a form two runs can be compared by, line for line.
using System.Text.Json.Nodes;
using Workbook.Training;

namespace Workbook.Tests;

static class TrainerRuns
{
    /// <summary>The small GRPO stage the replay and stop-rule tests start from (8 steps of 2 prompts × 4 samples).
    /// </summary>
    public static GrpoOptions TinyGrpo() =>
        new()
        {
            LearningRate = 3e-3,
            MaxSteps = 8,
            PerDeviceTrainBatchSize = 8,
            NumGenerations = 4,
            MaxCompletionLength = 8,
            Beta = 0.04,
            ZeroSignalSteps = 0,
        };

    /// <summary>Makes <paramref name="trainer"/> throw OperationCanceledException right after step
    /// <paramref name="step"/> (after that step's checkpoint, if it saves one).</summary>
    public static T CrashAfter<T>(this T trainer, long step)
        where T : ITrainer
    {
        trainer.AfterStep = s =>
        {
            if (s == step)
                throw new OperationCanceledException("simulated crash");
        };
        return trainer;
    }

    /// <summary>The numeric metrics of a run, without wall-clock timings (which differ between any two runs).</summary>
    public static List<Dictionary<string, double>> Comparable(string dir) =>
        MetricsLog
            .Read(Path.Combine(dir, "metrics.jsonl"))
            .Select(o =>
                o.Where(kv =>
                        kv.Value is JsonValue v
                        && v.TryGetValue<double>(out _)
                        && !kv.Key.StartsWith("timing/")
                        && kv.Key is not ("step_time" or "tokens_per_second" or "eval_runtime")
                    )
                    .ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>())
            )
            .ToList();
}

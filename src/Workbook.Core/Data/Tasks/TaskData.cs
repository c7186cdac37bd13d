using Workbook.Verifiers;

namespace Workbook.Data;

/// <summary>
/// Everything an experiment needs from a task: training and held-out expert examples, "base" examples (the same kind of
/// prompts with terse answers, used to give the model a starting point with non-zero reward), the RL reward and the
/// evaluation verifiers, plus a plain statement of the design and why it produces the effects it does.
/// </summary>
public sealed record TaskData(
    string Name,
    List<Example> Train,
    List<Example> Eval,
    List<Example> Base,
    IVerifier Reward,
    IVerifier[] EvalVerifiers,
    string Design
)
{
    /// <summary>E_{y~p_data} r(x, y) when the task's expert mix makes it known exactly (generated tasks), else null
    /// (then it is measured on the held-out expert responses).</summary>
    public double? ExpertReward { get; init; }

    /// <summary>Terse answers to the held-out prompts (embedded tasks; empty for file tasks): what the base stage's
    /// language modelling would have learnt on them. forgetting_task evaluates the other task on these.</summary>
    public List<Example> HeldOutBase { get; init; } = [];

    /// <summary>Text the task can produce in other configurations (e.g. every expert wording of the grammar task),
    /// added to the compact vocabulary so that it, and the base model, do not depend on
    /// loose_format_fraction.</summary>
    public IReadOnlyList<string> ExtraVocabularyText { get; init; } = [];

    /// <summary>What loading did to the data (duplicates merged, conflicting rows dropped, defaults inherited): lines
    /// for the run log, so nothing is changed silently.</summary>
    public IReadOnlyList<string> Notes { get; init; } = [];

    /// <summary>Rows of the data files skipped as bad (task.skip_bad, --skip-bad): in the notes and the
    /// summary.</summary>
    public int SkippedBadRows { get; init; }
}

public static class TaskRegistry
{
    public static readonly string[] Embedded = ["grammar", "arithmetic"];

    /// <summary>"grammar", "arithmetic", "cola:FILE" or "gsm8k:FILE".</summary>
    public static TaskData Create(string spec, int seed, TaskOptions? options = null)
    {
        options ??= new TaskOptions();
        var colon = spec.IndexOf(':');
        var (kind, file) = colon < 0 ? (spec, null) : (spec[..colon], spec[(colon + 1)..]);
        if (options.EvalFile is not null && kind != "cola")
            throw new WorkbookException(
                $"option task.eval_file (--eval-dataset): only for cola:FILE datasets (got dataset {spec})"
            );
        var task = kind switch
        {
            "grammar" => GrammarTask.Create(seed, options),
            "arithmetic" => ArithmeticTask.Create(seed, options),
            "cola" when file is not null => FileTasks.Cola(file, seed, options),
            "gsm8k" when file is not null => FileTasks.Gsm8k(file, seed, options),
            _ => throw new WorkbookException(
                $"unknown dataset '{spec}': expected grammar, arithmetic, cola:FILE or gsm8k:FILE"
            ),
        };
        // the RL reward: the strict verifier (the first evaluation verifier) or the lenient one (the last)
        task = options.Reward == "lenient" ? task with { Reward = task.EvalVerifiers[^1] } : task;
        // grammar: every expert label is right; the strict line ends a (1 − loose_format_fraction) share of responses
        if (kind == "grammar")
            task = task with { ExpertReward = options.Reward == "lenient" ? 1 : 1 - options.LooseFormatFraction };
        // the null control: a fair coin whatever the response (Verifiers/CoinReward.cs); E_{p_data} r is its p
        if (options.Reward == "coin")
        {
            var coin = new CoinReward();
            task = task with { Reward = coin, ExpertReward = coin.P };
        }
        return task;
    }
}

/// <summary>Rows of a generated task with distinct prompts (so held-out prompts never appear in training).</summary>
static class DistinctRows
{
    /// <param name="draw">draws a candidate: its prompt key, and a builder that is called (consuming more randomness)
    /// only when the key is new, so the sequence of random draws does not depend on how duplicates are handled</param>
    public static List<(Example Expert, Example Terse)> Draw(
        string task,
        int need,
        Func<int, (string Key, Func<(Example, Example)> Build)> draw
    )
    {
        var rows = new List<(Example, Example)>();
        var seen = new HashSet<string>();
        for (int guard = 0; rows.Count < need && guard < need * 50; guard++)
        {
            var (key, build) = draw(rows.Count);
            if (seen.Add(key))
                rows.Add(build());
        }
        if (rows.Count < need)
            throw new WorkbookException($"{task} task: only {rows.Count} distinct prompts for {need} requested rows");
        return rows;
    }
}

/// <summary>Task construction knobs (documented defaults).</summary>
public sealed record TaskOptions
{
    /// <summary>Training examples generated (embedded tasks) or taken (file tasks; 0 = all).</summary>
    public int TrainSize { get; init; } = 4000;

    /// <summary>Held-out expert examples for the SFT-loss curve and the reward evaluation.</summary>
    public int EvalSize { get; init; } = 256;

    /// <summary>Fraction of expert responses that state the label in natural wording instead of the strict final line.
    /// This is the design choice behind the format half of both coupling effects; set 0 to switch it off.</summary>
    public double LooseFormatFraction { get; init; } = 0.35;

    /// <summary>Whether expert responses carry a short rationale before the answer.</summary>
    public bool Rationales { get; init; } = true;
    public bool SkipBad { get; init; }

    /// <summary>The RL reward: strict (the exact final line / "#### N", the paper's) or lenient (the last label or
    /// number anywhere, which every expert response earns: under it Theorem 3.1 predicts no SFT-loss rise), or coin (a
    /// fair coin per sampled completion, whatever it says: its optimum is the reference policy, so any rise is RL's
    /// noise). Evaluations always score the strict and lenient rewards.</summary>
    public string Reward { get; init; } = "strict";

    /// <summary>File tasks: where the prompt states the required answer format: user (appended to the question), system
    /// (a system message) or none.</summary>
    public string FormatInstruction { get; init; } = "user";

    /// <summary>The chat template's enable_thinking for generation prompts (false pre-fills an empty think
    /// block).</summary>
    public bool EnableThinking { get; init; }

    /// <summary>File tasks: a separate held-out file (CoLA: in_domain_dev.tsv, out_of_domain_dev.tsv or GLUE's dev);
    /// null = hold out eval_size rows of the training file.</summary>
    public string? EvalFile { get; init; }

    public void Validate()
    {
        if (TrainSize < 0)
            throw new WorkbookException($"train_size must be >= 0 (got {TrainSize})");
        if (EvalSize < 1)
            throw new WorkbookException($"eval_size must be >= 1 (got {EvalSize})");
        if (Reward is not ("strict" or "lenient" or "coin"))
            throw new WorkbookException(
                $"option task.reward: '{Reward}' is not strict, lenient or coin (a fair coin: the null control)"
            );
        if (LooseFormatFraction is < 0 or > 1)
            throw new WorkbookException($"loose_format_fraction must be in [0, 1] (got {LooseFormatFraction})");
        if (FormatInstruction is not ("user" or "system" or "none"))
            throw new WorkbookException($"format_instruction must be user, system or none (got '{FormatInstruction}')");
    }
}

// Tasks built from real dataset files (the paper's setting: CoLA; and GSM8K). Choices for CoLA:
//  1. Rows are de-duplicated on the exact sentence: repeats with one label merge into one row; a sentence seen with
// both labels is dropped (its label is not a fact). Both counts go to Notes (the run log) and to Design (the report).
//  2. The prompt states the required format (task.format_instruction: user, system or none), so a model that follows
//     instructions earns the strict reward before any training.
//  3. Expert responses are the label: the strict line "Answer: <label>", or with loose_format_fraction natural wording.
//  4. Held out: eval_size rows of the shuffled training file, or a separate file (task.eval_file: CoLA's dev files).
using Workbook.Text;
using Workbook.Verifiers;

namespace Workbook.Data;

/// <summary>What de-duplication did: rows read, rows merged into an earlier identical row, sentences dropped because
/// they carry both labels, and the rows those sentences had.</summary>
public sealed record DuplicateCounts(int Rows, int Kept, int MergedRows, int ConflictingSentences, int ConflictingRows)
{
    public override string ToString() =>
        $"{Rows} rows: {MergedRows} exact duplicate(s) merged, {ConflictingSentences} sentence(s) with conflicting "
        + $"labels dropped ({ConflictingRows} rows), {Kept} kept";
}

public static class FileTasks
{
    public const string Instruction =
        "End your reply with exactly one line: \"Answer: acceptable\" or \"Answer: unacceptable\".";

    /// <summary>The CoLA prompt: the question, the sentence, and (unless none) the format instruction.</summary>
    public static List<ChatMessage> ColaPrompt(string sentence, string formatInstruction)
    {
        var question = $"{GrammarTask.Question} \"{sentence}\"";
        return formatInstruction switch
        {
            "user" => [ChatMessage.User($"{question}\n{Instruction}")],
            "system" => [ChatMessage.System(Instruction), ChatMessage.User(question)],
            "none" => [ChatMessage.User(question)],
            _ => throw new WorkbookException(
                $"format_instruction must be user, system or none (got '{formatInstruction}')"
            ),
        };
    }

    /// <summary>Merges exact-duplicate sentences (same label) and drops sentences seen with both labels; keeps the
    /// first occurrence's position.</summary>
    public static (List<ColaRow> Rows, DuplicateCounts Counts) Deduplicate(IReadOnlyList<ColaRow> rows)
    {
        var labels = new Dictionary<string, HashSet<int>>();
        var count = new Dictionary<string, int>();
        foreach (var r in rows)
        {
            var key = r.Sentence.Trim();
            if (!labels.TryGetValue(key, out var set))
                labels[key] = set = [];
            set.Add(r.Label);
            count[key] = count.GetValueOrDefault(key) + 1;
        }
        var seen = new HashSet<string>();
        var kept = new List<ColaRow>();
        int merged = 0;
        foreach (var r in rows)
        {
            var key = r.Sentence.Trim();
            if (labels[key].Count > 1)
                continue;
            if (!seen.Add(key))
            {
                merged++;
                continue;
            }
            kept.Add(r);
        }
        var conflicting = labels.Where(kv => kv.Value.Count > 1).Select(kv => kv.Key).ToList();
        return (
            kept,
            new DuplicateCounts(rows.Count, kept.Count, merged, conflicting.Count, conflicting.Sum(k => count[k]))
        );
    }

    /// <summary>A CoLA evaluation file: the raw 4-column format (in_domain_dev.tsv, out_of_domain_dev.tsv, GLUE's
    /// dev.tsv) or a 2-column file with the header "sentence&lt;TAB&gt;label". An unknown layout or a file without rows
    /// is an error naming the file (and line).</summary>
    public static (List<ColaRow> Rows, DuplicateCounts Counts) LoadColaEval(string path)
    {
        if (!File.Exists(path))
            throw new WorkbookException($"{path}: eval file not found");
        int lineNo = 0;
        string? first = null;
        foreach (var line in File.ReadLines(path))
        {
            lineNo++;
            if (line.Trim().Length > 0)
            {
                first = line;
                break;
            }
        }
        if (first is null)
            throw new WorkbookException($"{path}: the eval file has no rows");
        var f = first.Split('\t');
        bool raw = f.Length == 4 && f[1].Trim() is "0" or "1";
        bool glue = f.Length == 2 && f[0].Trim() == "sentence" && f[1].Trim() == "label";
        if (f.Length == 2 && f[0].Trim() == "index" && f[1].Trim() == "sentence")
            throw new WorkbookException(
                $"{path}:{lineNo}: an unlabelled file (header 'index, sentence': GLUE's test split); "
                    + "evaluation needs labels: use in_domain_dev.tsv, out_of_domain_dev.tsv or GLUE's dev.tsv"
            );
        if (!raw && !glue)
            throw new WorkbookException(
                $"{path}:{lineNo}: unknown CoLA layout ({f.Length} tab-separated field(s)); expected "
                    + "the raw 4-column format (source, label 0/1, mark, sentence) or 2 columns with the header "
                    + "'sentence<TAB>label'"
            );
        var (rows, _) = Datasets.LoadCola(path);
        if (rows.Count == 0)
            throw new WorkbookException($"{path}: the eval file has no rows (only a header)");
        return Deduplicate(rows);
    }

    public static TaskData Cola(string path, int seed, TaskOptions o)
    {
        o.Validate();
        var (loaded, report) = Datasets.LoadCola(path, o.SkipBad);
        var (rows, counts) = Deduplicate(loaded);
        var notes = new List<string> { $"CoLA {path}: {counts}" };
        if (report.Skipped > 0)
            notes.Add(SkippedNote(path, report));
        var rng = new Random(seed);
        (Example, Example) Make(ColaRow r)
        {
            var label = r.Label == 1 ? "acceptable" : "unacceptable";
            var prompt = ColaPrompt(r.Sentence, o.FormatInstruction);
            var expert = rng.NextDouble() < o.LooseFormatFraction ? $"The sentence is {label}." : $"Answer: {label}";
            return (new Example(prompt, expert, label, r.Source), new Example(prompt, label, label, r.Source));
        }
        var examples = rows.OrderBy(_ => rng.Next()).ToList().Select(Make).ToList();
        if (o.LooseFormatFraction > 0)
            notes.Add(
                $"CoLA expert responses: {o.LooseFormatFraction * 100:0.#}% in natural wording "
                    + "(task.loose_format_fraction; the paper recipe uses 0, the strict line only)"
            );
        string where = "held out from the training file";
        List<(Example, Example)>? evalRows = null;
        if (o.EvalFile is { } evalPath)
        {
            var (ev, evCounts) = LoadColaEval(evalPath);
            var trainSentences = rows.Select(r => r.Sentence.Trim()).ToHashSet();
            int overlap = ev.Count(r => trainSentences.Contains(r.Sentence.Trim()));
            notes.Add($"CoLA eval {evalPath}: {evCounts}; {overlap} of its sentences also occur in the training file");
            var evRng = new Random(seed + 1);
            evalRows = ev.OrderBy(_ => evRng.Next()).ToList().Select(Make).Take(o.EvalSize).ToList();
            where = $"from {evalPath}";
        }
        var design =
            $"CoLA from {path} ({counts}). Prompt: the question and the sentence"
            + (o.FormatInstruction == "none" ? "" : $", with the format instruction as a {o.FormatInstruction} message")
            + ". Expert responses are the label: the strict line 'Answer: <label>'"
            + (o.LooseFormatFraction > 0 ? $", or ({o.LooseFormatFraction * 100:0.#}%) natural wording" : " only")
            + $". Held-out data {where}. RL reward: strict format; evaluation also reports the lenient last-label "
            + "parse.";
        var task = evalRows is null
            ? Split("cola", examples, o, design)
            : WithEval("cola", examples, evalRows, o, design);
        return task with { Notes = notes, SkippedBadRows = report.Skipped };
    }

    static string SkippedNote(string path, LoadReport r) =>
        $"skipped {r.Skipped} bad row(s) of {path} (skip_bad): {string.Join("; ", r.FirstProblems)}";

    static TaskData Split(string name, List<(Example expert, Example terse)> ex, TaskOptions o, string design)
    {
        int evalN = Math.Min(o.EvalSize, ex.Count / 5);
        if (evalN < 1)
            throw new WorkbookException($"{name}: too few rows ({ex.Count}) for a held-out set");
        return WithEval(name, ex.Skip(evalN).ToList(), ex.Take(evalN).ToList(), o, design);
    }

    static TaskData WithEval(
        string name,
        List<(Example expert, Example terse)> train,
        List<(Example expert, Example terse)> eval,
        TaskOptions o,
        string design
    )
    {
        train = train.Take(o.TrainSize > 0 ? o.TrainSize : int.MaxValue).ToList(); // train_size 0 = every row
        IVerifier reward = name == "cola" ? new LabelVerifier(true) : new Gsm8kVerifier(false);
        IVerifier[] evals =
            name == "cola"
                ? [new LabelVerifier(true), new LabelVerifier(false)]
                : [new Gsm8kVerifier(false), new Gsm8kVerifier(true)];
        return new TaskData(
            name,
            train.Select(t => t.expert).ToList(),
            eval.Select(t => t.expert).ToList(),
            train.Select(t => t.terse).ToList(),
            reward,
            evals,
            design
        );
    }

    public static TaskData Gsm8k(string path, int seed, TaskOptions o)
    {
        o.Validate();
        var (rows, report) = Datasets.LoadGsm8k(path, o.SkipBad);
        var rng = new Random(seed);
        var examples = rows.OrderBy(_ => rng.Next())
            .Select(r =>
            {
                var prompt = new List<ChatMessage> { ChatMessage.User(r.Question) };
                return (
                    new Example(prompt, r.Answer, r.FinalAnswer, "gsm8k"),
                    new Example(prompt, $"#### {r.FinalAnswer}", r.FinalAnswer, "gsm8k")
                );
            })
            .ToList();
        return Split(
            "gsm8k",
            examples,
            o,
            $"GSM8K from {path}: expert responses are the reference solutions. RL reward: strict '#### N'."
        ) with
        {
            Notes = report.Skipped > 0 ? [SkippedNote(path, report)] : [],
            SkippedBadRows = report.Skipped,
        };
    }
}

// Tasks built from real dataset files (the paper's setting: CoLA; and GSM8K). CoLA has labels but no rationales, so the
// expert response is the label in the strict format, or (LooseFormatFraction) in natural words.
using Workbook.Text;
using Workbook.Verifiers;

namespace Workbook.Data;

public static class FileTasks
{
    public static TaskData Cola(string path, int seed, TaskOptions o)
    {
        o.Validate();
        var (rows, _) = Datasets.LoadCola(path, o.SkipBad);
        var rng = new Random(seed);
        var shuffled = rows.OrderBy(_ => rng.Next()).ToList();
        var examples = shuffled.Select(r =>
        {
            var label = r.Label == 1 ? "acceptable" : "unacceptable";
            var prompt = new List<ChatMessage> { ChatMessage.User($"{GrammarTask.Question} \"{r.Sentence}\"") };
            var expert = rng.NextDouble() < o.LooseFormatFraction ? $"The sentence is {label}." : $"Answer: {label}";
            return (new Example(prompt, expert, label, r.Source), new Example(prompt, label, label, r.Source));
        }).ToList();
        return Split("cola", examples, o, new LabelVerifier(true), [new LabelVerifier(true), new LabelVerifier(false)],
            $"CoLA from {path}: expert responses are the label, strict 'Answer: <label>' or ({o.LooseFormatFraction:P0}) natural wording. RL reward: strict format.");
    }

    public static TaskData Gsm8k(string path, int seed, TaskOptions o)
    {
        o.Validate();
        var (rows, _) = Datasets.LoadGsm8k(path, o.SkipBad);
        var rng = new Random(seed);
        var examples = rows.OrderBy(_ => rng.Next()).Select(r =>
        {
            var prompt = new List<ChatMessage> { ChatMessage.User(r.Question) };
            return (new Example(prompt, r.Answer, r.FinalAnswer, "gsm8k"), new Example(prompt, $"#### {r.FinalAnswer}", r.FinalAnswer, "gsm8k"));
        }).ToList();
        return Split("gsm8k", examples, o, new Gsm8kVerifier(false), [new Gsm8kVerifier(false), new Gsm8kVerifier(true)],
            $"GSM8K from {path}: expert responses are the reference solutions. RL reward: strict '#### N'.");
    }

    static TaskData Split(string name, List<(Example expert, Example terse)> ex, TaskOptions o, IVerifier reward, IVerifier[] eval, string design)
    {
        int evalN = Math.Min(o.EvalSize, ex.Count / 5);
        if (evalN < 1) throw new WorkbookException($"{name}: too few rows ({ex.Count}) for a held-out set");
        var evalSet = ex.Take(evalN).ToList();
        var train = ex.Skip(evalN).Take(o.TrainSize > 0 ? o.TrainSize : int.MaxValue).ToList();
        return new TaskData(name, train.Select(t => t.expert).ToList(), evalSet.Select(t => t.expert).ToList(),
            train.Select(t => t.terse).ToList(), reward, eval, design);
    }
}

using Workbook.Data;
using Workbook.Text;

namespace Workbook.Tests;

public class DataTests
{
    static string ColaPath => Path.Combine(TestData.Shared, "datasets", "cola", "train.tsv");

    static string Write(string name, string content)
    {
        var p = Path.Combine(TestData.TempDir(), name);
        File.WriteAllText(p, content);
        return p;
    }

    [Fact]
    public void Every_cola_train_row_loads()
    {
        var (rows, report) = Datasets.LoadCola(ColaPath);
        Assert.Equal(8551, rows.Count);
        Assert.Equal(6023, rows.Count(r => r.Label == 1));
        Assert.Equal(0, report.Skipped);
        Assert.Equal("gj04", rows[0].Source);
        Assert.Equal("Our friends won't buy this analysis, let alone the next one we propose.", rows[0].Sentence);
    }

    [Fact]
    public void Cola_two_column_form_with_header_loads()
    {
        var p = Write("c.tsv", "sentence\tlabel\nThe cat sleeps.\t1\nCat the sleeps.\t0\n");
        var (rows, _) = Datasets.LoadCola(p);
        Assert.Equal(new[] { 1, 0 }, rows.Select(r => r.Label));
    }

    [Theory]
    [InlineData("c.tsv", "gj04\t1\t\tFine.\ngj04\t2\t\tBad label.\n", "c.tsv:2", "label must be 0 or 1")]
    [InlineData("c.tsv", "gj04\t1\t\tFine.\nonly one field\n", "c.tsv:2", "expected 4 tab-separated fields")]
    [InlineData(
        "g.jsonl",
        "{\"question\":\"q\",\"answer\":\"#### 1\"}\n{\"question\": 1\n",
        "g.jsonl:2",
        "invalid JSON"
    )]
    [InlineData("g.jsonl", "{\"question\":\"q\"}\n", "g.jsonl:1", "missing field 'answer'")]
    [InlineData("g.jsonl", "{\"question\":\"q\",\"answer\":\"no final line\"}\n", "g.jsonl:1", "no '#### N' line")]
    [InlineData(
        "p.jsonl",
        "{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},{\"role\":\"user\",\"content\":\"x\"}]}\n",
        "p.jsonl:1",
        "last message must be the assistant"
    )]
    [InlineData("p.jsonl", "[1,2]\n", "p.jsonl:1", "expected a JSON object")]
    public void Bad_rows_name_file_and_line(string name, string content, string where, string why)
    {
        var p = Write(name, content);
        Action load = name[0] switch
        {
            'c' => () => Datasets.LoadCola(p),
            'g' => () => Datasets.LoadGsm8k(p),
            _ => () => Datasets.LoadPromptCompletion(p),
        };
        var e = Assert.Throws<WorkbookException>(load);
        Assert.Contains(where, e.Message);
        Assert.Contains(why, e.Message);
        Assert.Contains("--skip-bad", e.Message);
    }

    [Fact]
    public void Skip_bad_skips_and_counts()
    {
        var p = Write("c.tsv", "a\t1\t\tOne.\nb\t7\t\tTwo.\nc\t0\t*\tThree.\nbroken\n");
        var (rows, report) = Datasets.LoadCola(p, skipBad: true);
        Assert.Equal(2, rows.Count);
        Assert.Equal(2, report.Skipped);
        Assert.Contains(report.FirstProblems, m => m.Contains("c.tsv:2"));
    }

    [Fact]
    public void Prompt_completion_and_messages_rows_load()
    {
        var p = Write(
            "p.jsonl",
            "{\"prompt\":\"2+2?\",\"completion\":\"#### 4\",\"reference\":\"4\"}\n"
                + "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                + "{\"role\":\"user\",\"content\":\"u\"},{\"role\":\"assistant\",\"content\":\"a\"}]}\n"
        );
        var (rows, _) = Datasets.LoadPromptCompletion(p);
        Assert.Equal("4", rows[0].Reference);
        Assert.Equal(2, rows[1].Prompt.Count);
        Assert.Equal("a", rows[1].Completion);
    }

    [Theory]
    [InlineData("grammar")]
    [InlineData("arithmetic")]
    public void Embedded_tasks_are_deterministic_disjoint_and_verifiable(string name)
    {
        var o = new TaskOptions { TrainSize = 600, EvalSize = 100 };
        var a = TaskRegistry.Create(name, 3, o);
        var b = TaskRegistry.Create(name, 3, o);
        var c = TaskRegistry.Create(name, 4, o);
        Assert.Equal(a.Train.Select(e => e.Expert + e.PromptText), b.Train.Select(e => e.Expert + e.PromptText));
        Assert.NotEqual(a.Train.Select(e => e.PromptText), c.Train.Select(e => e.PromptText));
        Assert.Empty(a.Train.Select(e => e.PromptText).Intersect(a.Eval.Select(e => e.PromptText)));
        // the expert responses earn the lenient reward always, and the strict reward exactly when they use the strict
        // form
        var lenient = a.EvalVerifiers[1];
        foreach (var e in a.Train.Concat(a.Eval))
        {
            Assert.Equal(1.0, lenient.Score(e.PromptText, e.Expert, e.Reference).Reward);
            var strict = a.Reward.Score(e.PromptText, e.Expert, e.Reference);
            Assert.Equal(strict.FormatOk ? 1.0 : 0.0, strict.Reward);
        }
        double looseShare =
            a.Train.Count(e => a.Reward.Score("", e.Expert, e.Reference).Reward == 0) / (double)a.Train.Count;
        Assert.InRange(looseShare, 0.25, 0.45); // LooseFormatFraction 0.35
        if (name == "grammar")
            Assert.InRange(a.Train.Count(e => e.Reference == "acceptable") / (double)a.Train.Count, 0.45, 0.55);
    }

    [Fact]
    public void Task_vocabulary_is_compact_and_lossless()
    {
        var tok = Qwen3Tokenizer.Load(Path.Combine(TestData.Golden, "tiny-qwen3-bf16"));
        var task = TaskRegistry.Create("grammar", 1, new TaskOptions { TrainSize = 500, EvalSize = 50 });
        var v = TaskVocabulary.Build(tok, task);
        Assert.InRange(v.Size, 100, 600);
        foreach (var e in task.Eval)
        {
            var ids = ChatTemplate.Tokenize(tok, [.. e.Prompt, ChatMessage.Assistant(e.Expert)], false, false).Ids;
            var compact = v.ToCompact(ids);
            Assert.All(compact, c => Assert.InRange(c, 0, v.Size - 1));
            Assert.Equal(ids, v.ToQwen(compact));
        }
        var path = Path.Combine(TestData.TempDir(), "vocab.json");
        v.Save(path);
        Assert.Equal(v.QwenIds, TaskVocabulary.Load(path).QwenIds);
        Assert.Throws<WorkbookException>(() => v.ToCompact(150000));
    }
}

// Per-step metrics: one JSON object per line in metrics.jsonl (TRL's names), mirrored to TensorBoard event files.
// On resume the file is rewritten (atomically) without the lines after the checkpoint's step, so a resumed run's log
// reads exactly like an uninterrupted one.
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace Workbook.Training;

public sealed class MetricsLog : IDisposable
{
    public string Path { get; }
    readonly StreamWriter writer;
    readonly SummaryWriter? tb;
    public event Action<long, IReadOnlyDictionary<string, double>>? Logged;
    readonly HashSet<long> evalSteps = [];

    public MetricsLog(string dir, bool tensorboard = true, long? truncateAfterStep = null)
    {
        Directory.CreateDirectory(dir);
        Path = System.IO.Path.Combine(dir, "metrics.jsonl");
        if (truncateAfterStep is { } keep && File.Exists(Path))
        {
            var kept = new List<string>();
            foreach (var l in File.ReadAllLines(Path))
            {
                JsonObject? o;
                try
                {
                    o = JsonNode.Parse(l) as JsonObject;
                }
                catch (JsonException)
                {
                    continue;
                } // a half-written last line from a killed run
                if (o?["step"] is not JsonValue v || !v.TryGetValue<long>(out var step) || step > keep)
                    continue;
                kept.Add(l);
                // the evaluations already logged are not logged again by the resumed run
                if (o.Any(kv => kv.Key.StartsWith("eval_")))
                    evalSteps.Add(step);
            }
            AtomicFile.WriteAllText(Path, string.Concat(kept.Select(l => l + "\n")));
        }
        else if (truncateAfterStep is null && File.Exists(Path))
            File.Delete(Path);
        writer = new StreamWriter(new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read))
        {
            AutoFlush = true,
        };
        if (tensorboard)
            tb = utils.tensorboard.SummaryWriter(System.IO.Path.Combine(dir, "tensorboard"));
    }

    /// <summary>True when the file already holds an evaluation row at this step (kept from before a resume, or
    /// logged).</summary>
    public bool HasEvalAt(long step) => evalSteps.Contains(step);

    public void Log(
        long step,
        IReadOnlyDictionary<string, double> metrics,
        IReadOnlyDictionary<string, object>? extra = null
    )
    {
        if (metrics.Keys.Any(k => k.StartsWith("eval_")))
            evalSteps.Add(step);
        var o = new JsonObject { ["step"] = step };
        if (extra is not null)
            foreach (var (k, v) in extra)
                o[k] = JsonValue.Create(v);
        foreach (var (k, v) in metrics)
            o[k] = double.IsFinite(v) ? v : null;
        writer.WriteLine(o.ToJsonString());
        if (tb is not null)
            foreach (var (k, v) in metrics)
                if (double.IsFinite(v))
                    tb.add_scalar(k, (float)v, (int)step);
        Logged?.Invoke(step, metrics);
    }

    /// <summary>Reads a metrics file. A half-written last line (a kill mid-write) is ignored; any other unreadable line
    /// is an error naming the file and line.</summary>
    public static List<JsonObject> Read(string path)
    {
        var lines = File.ReadAllLines(path);
        var rows = new List<JsonObject>();
        for (int i = 0; i < lines.Length; i++)
        {
            if (lines[i].Trim().Length == 0)
                continue;
            try
            {
                rows.Add(JsonNode.Parse(lines[i]) as JsonObject ?? throw new JsonException("not a JSON object"));
            }
            catch (JsonException e)
            {
                if (i == lines.Length - 1)
                    break;
                throw new WorkbookException($"{path}:{i + 1}: unreadable metrics line ({e.Message})");
            }
        }
        return rows;
    }

    public void Dispose() => writer.Dispose(); // SummaryWriter writes each event as it comes

    public static string Format(IReadOnlyDictionary<string, double> m, params string[] keys) =>
        string.Join(
            "  ",
            keys.Where(m.ContainsKey)
                .Select(k => $"{k} {m[k].ToString(Math.Abs(m[k]) >= 100 ? "F0" : "G4", CultureInfo.InvariantCulture)}")
        );
}

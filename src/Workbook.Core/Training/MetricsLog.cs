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

    public MetricsLog(string dir, bool tensorboard = true, long? truncateAfterStep = null)
    {
        Directory.CreateDirectory(dir);
        Path = System.IO.Path.Combine(dir, "metrics.jsonl");
        if (truncateAfterStep is { } keep && File.Exists(Path))
        {
            var kept = File.ReadAllLines(Path).Where(l =>
            {
                try { return JsonNode.Parse(l)?["step"]?.GetValue<long>() <= keep; }
                catch (JsonException) { return false; }   // a half-written last line from a killed run
            });
            AtomicFile.WriteAllText(Path, string.Concat(kept.Select(l => l + "\n")));
        }
        else if (truncateAfterStep is null && File.Exists(Path)) File.Delete(Path);
        writer = new StreamWriter(new FileStream(Path, FileMode.Append, FileAccess.Write, FileShare.Read)) { AutoFlush = true };
        if (tensorboard) tb = utils.tensorboard.SummaryWriter(System.IO.Path.Combine(dir, "tensorboard"));
    }

    public void Log(long step, IReadOnlyDictionary<string, double> metrics, IReadOnlyDictionary<string, object>? extra = null)
    {
        var o = new JsonObject { ["step"] = step };
        if (extra is not null) foreach (var (k, v) in extra) o[k] = JsonValue.Create(v);
        foreach (var (k, v) in metrics) o[k] = double.IsFinite(v) ? v : null;
        writer.WriteLine(o.ToJsonString());
        if (tb is not null) foreach (var (k, v) in metrics) if (double.IsFinite(v)) tb.add_scalar(k, (float)v, (int)step);
        Logged?.Invoke(step, metrics);
    }

    public static List<JsonObject> Read(string path) =>
        File.ReadLines(path).Where(l => l.Trim().Length > 0).Select(l => JsonNode.Parse(l)!.AsObject()).ToList();

    public void Dispose() => writer.Dispose();   // SummaryWriter writes each event as it comes

    public static string Format(IReadOnlyDictionary<string, double> m, params string[] keys) =>
        string.Join("  ", keys.Where(m.ContainsKey).Select(k => $"{k} {m[k].ToString(Math.Abs(m[k]) >= 100 ? "F0" : "G4", CultureInfo.InvariantCulture)}"));
}

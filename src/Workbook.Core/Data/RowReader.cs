// Line-oriented readers for JSONL and TSV. A bad row is an error naming file:line and the reason; with skipBad it is
// counted and skipped instead (the report keeps the first reasons), so nothing is dropped silently.
// A line longer than MaxLineChars (for instance from /dev/zero) and invalid UTF-8 are errors naming the file and line:
// a reader never grows without bound and never replaces bytes silently.
using System.Text;
using System.Text.Json;

namespace Workbook.Data;

public static class RowReader
{
    public static (List<T> Rows, LoadReport Report) Read<T>(string path, Func<string, T> parse, bool skipBad, bool skipBlank = true)
    {
        if (!File.Exists(path)) throw new WorkbookException($"{path}: file not found");
        var rows = new List<T>();
        var problems = new List<string>();
        int skipped = 0, lineNo = 0;
        foreach (var line in Lines(path))
        {
            lineNo++;
            if (skipBlank && line.Trim().Length == 0) continue;
            try { rows.Add(parse(line)); }
            catch (Exception e) when (e is RowException or JsonException or FormatException or InvalidOperationException or KeyNotFoundException)
            {
                var msg = $"{path}:{lineNo}: {(e is RowException ? e.Message : e is JsonException ? "invalid JSON (" + e.Message + ")" : e.Message)}";
                if (!skipBad) throw new WorkbookException(msg + " (use --skip-bad to skip bad rows)");
                skipped++;
                if (problems.Count < 5) problems.Add(msg);
            }
        }
        return (rows, new LoadReport(rows.Count, skipped, problems));
    }

    /// <summary>Longest line a reader accepts, in characters.</summary>
    public const int MaxLineChars = 16 << 20;

    /// <summary>The lines of a UTF-8 text file (\n or \r\n), each at most <paramref name="maxChars"/> characters.</summary>
    public static IEnumerable<string> Lines(string path, int maxChars = MaxLineChars)
    {
        if (Directory.Exists(path)) throw new WorkbookException($"{path}: a folder, not a data file");
        using var reader = new StreamReader(path, new UTF8Encoding(false, throwOnInvalidBytes: true), true, 1 << 16);
        var sb = new StringBuilder();
        var buf = new char[1 << 16];
        int lineNo = 1;
        while (true)
        {
            int n;
            try { n = reader.Read(buf, 0, buf.Length); }
            catch (DecoderFallbackException) { throw new WorkbookException($"{path}:{lineNo}: invalid UTF-8 (the file must be UTF-8 text)"); }
            if (n == 0) break;
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (buf[i] != '\n') continue;
                sb.Append(buf, start, i - start);
                start = i + 1;
                if (sb.Length > maxChars) throw TooLong(path, lineNo, maxChars);
                if (sb.Length > 0 && sb[^1] == '\r') sb.Length--;
                yield return sb.ToString();
                sb.Clear();
                lineNo++;
            }
            sb.Append(buf, start, n - start);
            if (sb.Length > maxChars) throw TooLong(path, lineNo, maxChars);
        }
        if (sb.Length > 0) yield return sb.Length > 0 && sb[^1] == '\r' ? sb.ToString(0, sb.Length - 1) : sb.ToString();
    }

    static WorkbookException TooLong(string path, int line, int max) =>
        new($"{path}:{line}: line longer than {max:N0} characters (not a line-oriented text file?)");

    public static JsonElement Object(string line)
    {
        using var doc = JsonDocument.Parse(line);
        if (doc.RootElement.ValueKind != JsonValueKind.Object) throw new RowException("expected a JSON object");
        return doc.RootElement.Clone();
    }

    public static string RequiredString(JsonElement o, string field)
    {
        if (!o.TryGetProperty(field, out var v)) throw new RowException($"missing field '{field}'");
        if (v.ValueKind != JsonValueKind.String) throw new RowException($"field '{field}' must be a string");
        return v.GetString()!;
    }
}

public sealed class RowException(string message) : Exception(message);

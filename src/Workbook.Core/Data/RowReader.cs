// Line-oriented readers for JSONL and TSV. A bad row is an error naming file:line and the reason; with skipBad it is
// counted and skipped instead (the report keeps the first reasons), so nothing is dropped silently.
// A line longer than MaxLineChars (for instance from /dev/zero) and invalid UTF-8 are errors naming the file and line:
// a reader never grows without bound and never replaces bytes silently.
using System.Text;
using System.Text.Json;

namespace Workbook.Data;

public static class RowReader
{
    /// <summary>Raised when rows were skipped (skipBad), so a command can report them even where the loader's caller
    /// keeps only the rows.</summary>
    public static event Action<string, LoadReport>? Skipped;

    public static (List<T> Rows, LoadReport Report) Read<T>(
        string path,
        Func<string, T> parse,
        bool skipBad,
        bool skipBlank = true
    )
    {
        if (!File.Exists(path))
            throw new WorkbookException($"{path}: file not found");
        var rows = new List<T>();
        var problems = new List<string>();
        int skipped = 0,
            lineNo = 0;
        foreach (var line in Lines(path))
        {
            lineNo++;
            if (skipBlank && line.Trim().Length == 0)
                continue;
            try
            {
                rows.Add(parse(line));
            }
            catch (Exception e)
                when (e
                        is RowException
                            or JsonException
                            or FormatException
                            or InvalidOperationException
                            or KeyNotFoundException
                )
            {
                var why = e is JsonException ? "invalid JSON (" + e.Message + ")" : e.Message;
                var msg = $"{path}:{lineNo}: {why}";
                if (!skipBad)
                    throw new WorkbookException(
                        msg + " (to skip bad rows: --skip-bad; in `run`: --set task.skip_bad=true)"
                    );
                skipped++;
                if (problems.Count < 5)
                    problems.Add(msg);
            }
        }
        var report = new LoadReport(rows.Count, skipped, problems);
        if (skipped > 0)
            Skipped?.Invoke(path, report);
        return (rows, report);
    }

    /// <summary>Longest line a reader accepts, in characters.</summary>
    public const int MaxLineChars = 16 << 20;

    /// <summary>The lines of a UTF-8 text file (\n or \r\n; a leading BOM is dropped), each at most
    /// <paramref name="maxChars"/> bytes. Lines are split as bytes and decoded one by one, so an error names its
    /// line.</summary>
    public static IEnumerable<string> Lines(string path, int maxChars = MaxLineChars)
    {
        if (Directory.Exists(path))
            throw new WorkbookException($"{path}: a folder, not a data file");
        var utf8 = new UTF8Encoding(false, throwOnInvalidBytes: true);
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        var line = new MemoryStream();
        var buf = new byte[1 << 16];
        int lineNo = 1;
        bool first = true;
        string Decode()
        {
            var bytes = line.GetBuffer().AsSpan(0, (int)line.Length);
            if (first && bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]))
                bytes = bytes[3..];
            if (bytes.Length > 0 && bytes[^1] == '\r')
                bytes = bytes[..^1];
            first = false;
            try
            {
                return utf8.GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                throw new WorkbookException($"{path}:{lineNo}: invalid UTF-8 (the file must be UTF-8 text)");
            }
        }
        int n;
        while ((n = fs.Read(buf, 0, buf.Length)) > 0)
        {
            int start = 0;
            for (int i = 0; i < n; i++)
            {
                if (buf[i] != (byte)'\n')
                    continue;
                line.Write(buf, start, i - start);
                start = i + 1;
                if (line.Length > maxChars)
                    throw TooLong(path, lineNo, maxChars);
                yield return Decode();
                line.SetLength(0);
                lineNo++;
            }
            line.Write(buf, start, n - start);
            if (line.Length > maxChars)
                throw TooLong(path, lineNo, maxChars);
        }
        if (line.Length > 0)
            yield return Decode();
    }

    static WorkbookException TooLong(string path, int line, int max) =>
        new($"{path}:{line}: line longer than {max:N0} bytes (not a line-oriented text file?)");

    public static JsonElement Object(string line)
    {
        using var doc = JsonDocument.Parse(line);
        if (doc.RootElement.ValueKind != JsonValueKind.Object)
            throw new RowException("expected a JSON object");
        return doc.RootElement.Clone();
    }

    public static string RequiredString(JsonElement o, string field)
    {
        if (!o.TryGetProperty(field, out var v))
            throw new RowException($"missing field '{field}'");
        if (v.ValueKind != JsonValueKind.String)
            throw new RowException($"field '{field}' must be a string");
        return v.GetString()!;
    }
}

public sealed class RowException(string message) : Exception(message);

// The safetensors format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape,
// data_offsets:[b,e]}},
// then the raw little-endian tensor bytes. Reading validates everything against the file length before allocating, so a
// truncated file or a lying header is an error naming the file, never a crash or a huge allocation. No code runs from
// data.
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using static TorchSharp.torch;

namespace Workbook.Model;

public sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End);

public sealed class SafetensorsFile : IDisposable
{
    public string Path { get; }
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }
    public IReadOnlyDictionary<string, string> Metadata { get; }
    readonly FileStream stream;
    readonly long dataStart;

    const long MaxHeader = 100L << 20;

    SafetensorsFile(
        string path,
        FileStream fs,
        Dictionary<string, SafetensorsEntry> entries,
        Dictionary<string, string> meta,
        long dataStart
    )
    {
        Path = path;
        stream = fs;
        Entries = entries;
        Metadata = meta;
        this.dataStart = dataStart;
    }

    public static int ElementSize(string dtype) =>
        dtype switch
        {
            "F64" or "I64" or "U64" => 8,
            "F32" or "I32" or "U32" => 4,
            "F16" or "BF16" or "I16" or "U16" => 2,
            "I8" or "U8" or "BOOL" => 1,
            _ => throw new WorkbookException($"unsupported safetensors dtype '{dtype}'"),
        };

    public static ScalarType ToScalarType(string dtype) =>
        dtype switch
        {
            "F64" => ScalarType.Float64,
            "F32" => ScalarType.Float32,
            "F16" => ScalarType.Float16,
            "BF16" => ScalarType.BFloat16,
            "I64" => ScalarType.Int64,
            "I32" => ScalarType.Int32,
            "I16" => ScalarType.Int16,
            "I8" => ScalarType.Int8,
            "U8" => ScalarType.Byte,
            "BOOL" => ScalarType.Bool,
            _ => throw new WorkbookException($"unsupported safetensors dtype '{dtype}'"),
        };

    public static string FromScalarType(ScalarType t) =>
        t switch
        {
            ScalarType.Float64 => "F64",
            ScalarType.Float32 => "F32",
            ScalarType.Float16 => "F16",
            ScalarType.BFloat16 => "BF16",
            ScalarType.Int64 => "I64",
            ScalarType.Int32 => "I32",
            ScalarType.Int16 => "I16",
            ScalarType.Int8 => "I8",
            ScalarType.Byte => "U8",
            ScalarType.Bool => "BOOL",
            _ => throw new WorkbookException($"cannot store dtype {t} in safetensors"),
        };

    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path))
            throw new WorkbookException($"{path}: file not found");
        var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        try
        {
            long len = fs.Length;
            if (len < 8)
                throw new WorkbookException(
                    $"{path}: truncated safetensors file ({len} bytes; the 8-byte header length is missing)"
                );
            Span<byte> lenBytes = stackalloc byte[8];
            fs.ReadExactly(lenBytes);
            ulong un = BitConverter.ToUInt64(lenBytes);
            if (un == 0 || un > MaxHeader)
                throw new WorkbookException($"{path}: not a safetensors file (header length {un} is out of range)");
            long n = (long)un;
            if (8 + n > len)
                throw new WorkbookException(
                    $"{path}: truncated safetensors file (header claims {n} bytes, file has {len - 8} after the length)"
                );
            var header = new byte[n];
            fs.ReadExactly(header);
            JsonObject root;
            try
            {
                root = JsonNode.Parse(header)?.AsObject() ?? throw new JsonException("empty");
                _ = root.Count; // JsonObject finds duplicate names only when it builds its dictionary
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException)
            {
                throw new WorkbookException($"{path}: safetensors header is not valid JSON ({e.Message})");
            }
            catch (ArgumentException e)
            {
                throw new WorkbookException($"{path}: safetensors header names a tensor twice ({e.Message})");
            }
            long dataLen = len - 8 - n;
            var entries = new Dictionary<string, SafetensorsEntry>();
            var meta = new Dictionary<string, string>();
            foreach (var (name, node) in root)
            {
                if (name == "__metadata__")
                {
                    if (node is JsonObject m)
                        foreach (var (k, v) in m)
                            meta[k] = v?.ToString() ?? "";
                    continue;
                }
                try
                {
                    var o = node!.AsObject();
                    var dtype = o["dtype"]!.GetValue<string>();
                    var shape = o["shape"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
                    var offs = o["data_offsets"]!.AsArray().Select(x => x!.GetValue<long>()).ToArray();
                    if (offs.Length != 2)
                        throw new WorkbookException("data_offsets must have 2 entries");
                    if (shape.Any(d => d < 0))
                        throw new WorkbookException("negative dimension");
                    long count = shape.Aggregate(1L, (a, b) => checked(a * b));
                    long expect = checked(count * ElementSize(dtype));
                    if (offs[0] < 0 || offs[1] < offs[0])
                        throw new WorkbookException($"bad data_offsets [{offs[0]}, {offs[1]}]");
                    if (offs[1] - offs[0] != expect)
                        throw new WorkbookException(
                            $"data_offsets span {offs[1] - offs[0]} bytes but {dtype}[{string.Join(",", shape)}] "
                                + $"needs {expect}"
                        );
                    if (offs[1] > dataLen)
                        throw new WorkbookException(
                            $"truncated file: tensor ends at byte {offs[1]} of the data section, which has "
                                + $"only {dataLen} bytes"
                        );
                    entries[name] = new SafetensorsEntry(name, dtype, shape, offs[0], offs[1]);
                }
                catch (WorkbookException e)
                {
                    throw new WorkbookException($"{path}: tensor '{name}': {e.Message}");
                }
                catch (Exception e)
                    when (e
                            is InvalidOperationException
                                or NullReferenceException
                                or FormatException
                                or OverflowException
                                or JsonException
                    )
                {
                    throw new WorkbookException($"{path}: tensor '{name}': malformed header entry ({e.Message})");
                }
            }
            // the format forbids overlapping tensors and holes: the tensors tile the data section exactly
            long at = 0;
            foreach (var e in entries.Values.OrderBy(e => e.Begin).ThenBy(e => e.End))
            {
                if (e.Begin < at)
                    throw new WorkbookException(
                        $"{path}: tensor '{e.Name}' overlaps the tensor before it (data_offsets [{e.Begin}, {e.End}])"
                    );
                if (e.Begin > at)
                    throw new WorkbookException(
                        $"{path}: a hole of {e.Begin - at} bytes before tensor '{e.Name}' (the format forbids holes)"
                    );
                at = e.End;
            }
            if (at != dataLen)
                throw new WorkbookException(
                    $"{path}: {dataLen - at} bytes after the last tensor (the format forbids holes)"
                );
            return new SafetensorsFile(path, fs, entries, meta, 8 + n);
        }
        catch
        {
            fs.Dispose();
            throw;
        }
    }

    /// <summary>Reads one tensor in its stored dtype (CPU).</summary>
    public Tensor Read(string name)
    {
        if (!Entries.TryGetValue(name, out var e))
            throw new WorkbookException($"{Path}: no tensor '{name}'");
        var t = empty(e.Shape, dtype: ToScalarType(e.DType));
        try
        {
            Fill(e, t.bytes); // the tensor's own memory
        }
        catch
        {
            t.Dispose();
            throw;
        }
        return t;
    }

    /// <summary>Reads entry <paramref name="e"/>'s bytes into <paramref name="into"/>.</summary>
    void Fill(SafetensorsEntry e, Span<byte> into)
    {
        stream.Position = dataStart + e.Begin;
        try
        {
            stream.ReadExactly(into);
        }
        catch (EndOfStreamException)
        {
            throw new WorkbookException($"{Path}: truncated while reading '{e.Name}'");
        }
    }

    /// <summary>Reads one tensor straight into <paramref name="dest"/>'s memory when it is a contiguous CPU tensor of
    /// the stored dtype and shape (true), so a load holds no second copy of it (a 0.6B model's 622 MB embedding);
    /// false, reading nothing, otherwise.</summary>
    public bool TryReadInto(string name, Tensor dest)
    {
        if (!Entries.TryGetValue(name, out var e))
            throw new WorkbookException($"{Path}: no tensor '{name}'");
        if (
            dest.device_type != TorchSharp.DeviceType.CPU
            || !dest.is_contiguous()
            || dest.dtype != ToScalarType(e.DType)
            || !dest.shape.SequenceEqual(e.Shape)
        )
            return false;
        Fill(e, dest.bytes);
        return true;
    }

    public void Dispose() => stream.Dispose();

    /// <summary>Writes tensors (sorted by name, header padded with spaces to 8 bytes, as the reference writer does).
    /// Atomic.</summary>
    public static void Save(
        string path,
        IEnumerable<KeyValuePair<string, Tensor>> tensors,
        IReadOnlyDictionary<string, string>? metadata = null
    )
    {
        var list = tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal).ToList();
        var header = new JsonObject();
        var meta = new JsonObject();
        foreach (var (k, v) in metadata ?? new Dictionary<string, string> { ["format"] = "pt" })
            meta[k] = v;
        header["__metadata__"] = meta;
        long offset = 0;
        foreach (var (name, t) in list)
        {
            long size = t.numel() * t.ElementSize;
            header[name] = new JsonObject
            {
                ["dtype"] = FromScalarType(t.dtype),
                ["shape"] = new JsonArray(t.shape.Select(d => (JsonNode)d).ToArray()),
                ["data_offsets"] = new JsonArray(offset, offset + size),
            };
            offset += size;
        }
        var hb = Encoding.UTF8.GetBytes(header.ToJsonString());
        int pad = (8 - hb.Length % 8) % 8;
        var headerBytes = new byte[hb.Length + pad];
        hb.CopyTo(headerBytes, 0);
        for (int i = hb.Length; i < headerBytes.Length; i++)
            headerBytes[i] = (byte)' ';
        AtomicFile.Write(
            path,
            s =>
            {
                s.Write(BitConverter.GetBytes((ulong)headerBytes.Length));
                s.Write(headerBytes);
                foreach (var (_, t) in list)
                {
                    using var scope = NewDisposeScope(); // holds detach()'s and cpu()'s wrappers (see HeldScalars)
                    s.Write(t.detach().cpu().contiguous().bytes);
                }
            }
        );
    }
}

using System.Text;

namespace Workbook.Tests;

/// <summary>Locates ../shared (beside the checkout; WORKBOOK_SHARED overrides) and reads its reference files.</summary>
public static class TestData
{
    /// <summary>randn(shape) in float32 from a fresh Generator(seed) that is held until the draw returns (a Generator
    /// passed inline may be finalized mid-call, as a temporary tensor may: TorchScopePerTest).</summary>
    public static TorchSharp.torch.Tensor Randn(long[] shape, ulong seed)
    {
        using var g = new TorchSharp.torch.Generator(seed);
        return TorchSharp.torch.randn(shape, generator: g);
    }

    public static string RepoRoot { get; } = FindRoot();
    public static string Shared { get; } =
        Environment.GetEnvironmentVariable("WORKBOOK_SHARED") is { Length: > 0 } s
            ? Path.GetFullPath(s)
            : Path.GetFullPath(Path.Combine(RepoRoot, "..", "shared"));
    public static string Golden => Path.Combine(Shared, "golden");

    static string FindRoot()
    {
        var d = new DirectoryInfo(AppContext.BaseDirectory);
        while (d is not null && !File.Exists(Path.Combine(d.FullName, "Workbook.sln")))
            d = d.Parent;
        return d?.FullName ?? throw new InvalidOperationException("Workbook.sln not found above the test binaries");
    }

    /// <summary>A fresh directory under this process's root, workbook-tests/&lt;pid&gt;-&lt;guid&gt;. Why the care:
    /// directories left by every run once filled the disk that CI shares (41 GB).</summary>
    public static string TempDir()
    {
        var p = Path.Combine(TempRoot.Value, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(p);
        return p;
    }

    static readonly Lazy<string> TempRoot = new(MakeTempRoot);

    /// <summary>At exit the root is only renamed to done-&lt;guid&gt;: the test host is killed ~100 ms after its run
    /// ends, too soon to delete a run's files, so the next test process deletes it.</summary>
    static string MakeTempRoot()
    {
        var parent = Path.Combine(Path.GetTempPath(), "workbook-tests");
        Directory.CreateDirectory(parent);
        SweepStaleRoots(parent);
        var root = Path.Combine(parent, $"{Environment.ProcessId}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(root);
        AppDomain.CurrentDomain.ProcessExit += (_, _) =>
        {
            try
            {
                Directory.Move(root, Path.Combine(parent, $"done-{Guid.NewGuid():N}"));
            }
            catch (Exception) { } // an exit handler's exception would crash the host at exit
        };
        return root;
    }

    /// <summary>Deletes finished roots, and what a killed or crashed test process left: roots (and older bare-guid
    /// folders) whose process is gone, untouched for two hours (the age guards a live process in another PID
    /// namespace that shares /tmp).</summary>
    static void SweepStaleRoots(string parent)
    {
        var cutoff = DateTime.UtcNow.AddHours(-2);
        foreach (var d in Directory.EnumerateDirectories(parent))
        {
            var name = Path.GetFileName(d);
            var dash = name.IndexOf('-');
            var alive = dash > 0 && int.TryParse(name[..dash], out var pid) && WorkFolders.ProcessAlive(pid);
            if (
                name.StartsWith("done-", StringComparison.Ordinal)
                || !alive && Directory.GetLastWriteTimeUtc(d) < cutoff
            )
                TryDelete(d);
        }
    }

    static void TryDelete(string dir)
    {
        try
        {
            Directory.Delete(dir, recursive: true);
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
    }

    /// <summary>NumPy .npy v1/v2 reader for little-endian f4/i4 C-order arrays.</summary>
    public static (int[] shape, float[] data) ReadNpyF32(string path)
    {
        var (descr, shape, body, fortran) = ReadNpy(path);
        if (descr != "<f4")
            throw new InvalidDataException($"{path}: dtype {descr}, expected <f4");
        var data = new float[body.Length / 4];
        Buffer.BlockCopy(body, 0, data, 0, body.Length);
        return (shape, fortran ? ToCOrder(data, shape) : data);
    }

    public static int[] ReadNpyI32(string path)
    {
        var (descr, shape, body, fortran) = ReadNpy(path);
        if (fortran && shape.Length > 1)
            throw new InvalidDataException($"{path}: fortran-order int arrays are not supported");
        if (descr != "<i4")
            throw new InvalidDataException($"{path}: dtype {descr}, expected <i4");
        var data = new int[body.Length / 4];
        Buffer.BlockCopy(body, 0, data, 0, body.Length);
        return data;
    }

    /// <summary>Column-major (fortran_order: True, as the golden .cols.npy files are) to row-major.</summary>
    static float[] ToCOrder(float[] f, int[] shape)
    {
        if (shape.Length != 2)
            return shape.Length < 2 ? f : throw new InvalidDataException("fortran order only for 2-D arrays");
        int R = shape[0],
            C = shape[1];
        var c = new float[f.Length];
        for (int r = 0; r < R; r++)
        for (int j = 0; j < C; j++)
            c[r * C + j] = f[j * R + r];
        return c;
    }

    static (string descr, int[] shape, byte[] body, bool fortran) ReadNpy(string path)
    {
        var bytes = File.ReadAllBytes(path);
        if (bytes[0] != 0x93 || Encoding.ASCII.GetString(bytes, 1, 5) != "NUMPY")
            throw new InvalidDataException($"{path}: not .npy");
        int major = bytes[6];
        int hlen = major == 1 ? BitConverter.ToUInt16(bytes, 8) : (int)BitConverter.ToUInt32(bytes, 8);
        int start = major == 1 ? 10 : 12;
        var header = Encoding.ASCII.GetString(bytes, start, hlen);
        string descr = System.Text.RegularExpressions.Regex.Match(header, @"'descr':\s*'([^']+)'").Groups[1].Value;
        bool fortran = header.Contains("'fortran_order': True");
        var shapeText = System.Text.RegularExpressions.Regex.Match(header, @"'shape':\s*\(([^)]*)\)").Groups[1].Value;
        var shape = shapeText
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(int.Parse)
            .ToArray();
        return (descr, shape, bytes[(start + hlen)..], fortran);
    }
}

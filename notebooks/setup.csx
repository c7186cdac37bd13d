// Shared first cell of every notebook (#load "setup.csx"): loads the built core from the CLI's build output and makes
// Plotly.NET charts render inline and offline (plotly.js is inlined once; no CDN). Build first: ./workbook info
#r "../src/Workbook.Cli/bin/Release/net10.0/Workbook.Core.dll"
#r "../src/Workbook.Cli/bin/Release/net10.0/Plotly.NET.dll"
#r "../src/Workbook.Cli/bin/Release/net10.0/Plotly.NET.CSharp.dll"
using Microsoft.DotNet.Interactive.Formatting;
using Plotly.NET;
using Workbook.Charts;
using Workbook.Experiments;
using Workbook.Reports;
using Workbook.Theory;
using static Microsoft.DotNet.Interactive.Kernel;

// The kernel has no deps.json pointing TorchSharp at the bundled libtorch, so a system one found by name (Debian's
// libtorch-dev ships 1.13) would be loaded and fail; loading the bundled native library by path first prevents that.
var bundledTorch = System.IO.Path.Combine(
    System.IO.Path.GetDirectoryName(typeof(Workbench).Assembly.Location)!,
    "runtimes",
    "linux-x64",
    "native",
    "libLibTorchSharp.so"
);
if (OperatingSystem.IsLinux() && System.IO.File.Exists(bundledTorch))
    System.Runtime.InteropServices.NativeLibrary.Load(bundledTorch);

display(HTML(CurveCharts.PlotlyScriptTag()));
Formatter.Register<GenericChart>(c => CurveCharts.Html(c), "text/html");

// quick mode (CI budgets) is set by `workbook notebooks run --quick`; the notebooks pass it to the core explicitly
var Quick = Workbench.ParseQuick(Environment.GetEnvironmentVariable("WORKBOOK_QUICK"));
Console.WriteLine($"Workbook core loaded; quick mode: {Quick}; runs folder: {Workbench.RunsRoot}");

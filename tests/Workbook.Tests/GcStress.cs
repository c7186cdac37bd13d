using System.Runtime.CompilerServices;

namespace Workbook.Tests;

/// <summary>WORKBOOK_GC_STRESS=1: a thread collects and runs finalizers every millisecond while the tests run, so that
/// a tensor or Scalar whose last reference dies before the native call that reads it is freed mid-call often instead
/// of once in many runs (the test host crashes then). Off by default; a diagnostic for that class of bug.</summary>
static class GcStress
{
    [ModuleInitializer]
    internal static void Start()
    {
        if (Environment.GetEnvironmentVariable("WORKBOOK_GC_STRESS") != "1")
            return;
        var t = new Thread(() =>
        {
            for (long i = 0; ; i++)
            {
                GC.Collect(i % 500 == 0 ? 2 : 0, GCCollectionMode.Forced);
                GC.WaitForPendingFinalizers();
                Thread.Sleep(1);
            }
        })
        {
            IsBackground = true,
            Name = "gc-stress",
        };
        t.Start();
    }
}

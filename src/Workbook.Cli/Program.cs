using TorchSharp;
using System.Reflection;
foreach (var t in new[]{typeof(torch.Tensor), typeof(torch)}) {
 foreach (var m in t.GetMethods(BindingFlags.Public|BindingFlags.Instance|BindingFlags.Static).Where(m => new[]{"bytes","view","frombuffer","as_tensor","from_array","scaled_dot","repeat_interleave","multinomial","manual_seed","get_rng_state","set_rng_state","Generator","tensor","WriteBytesToStream","data"}.Any(k => m.Name.Contains(k))).Select(m => m.ToString()).Distinct().Take(60)) Console.WriteLine(t.Name+": "+m);
 foreach (var p in t.GetProperties().Where(p=>p.Name.Contains("bytes"))) Console.WriteLine("prop "+p);
}

namespace Workbook;

/// <summary>An error caused by the user's input (a file, a config value, an option): the message names what and where.
/// The CLI prints these without a stack trace.</summary>
public class WorkbookException(string message, Exception? inner = null) : Exception(message, inner);

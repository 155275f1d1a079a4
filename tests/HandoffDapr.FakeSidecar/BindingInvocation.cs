namespace HandoffDapr.FakeSidecar;

/// <summary>One <c>InvokeBinding</c> call as the sidecar received it, and what became of it.</summary>
/// <param name="Name">Binding name.</param>
/// <param name="Operation">Operation (create, get, post, ...).</param>
/// <param name="Metadata">Request metadata as sent by the app.</param>
/// <param name="Data">Request data.</param>
/// <param name="RequestUri">For bindings.http: the URL called; null when no request was made.</param>
/// <param name="StatusCode">For bindings.http: the target's status code; null when no response.</param>
/// <param name="Error">The error message returned to the app (gRPC status message), or null on success.</param>
public sealed record BindingInvocation(
    string Name,
    string Operation,
    IReadOnlyDictionary<string, string> Metadata,
    byte[] Data,
    Uri? RequestUri,
    int? StatusCode,
    string? Error);

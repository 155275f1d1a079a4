using WireMock;
using WireMock.ResponseBuilders;
using WireMock.Types;
using WireMock.Util;

namespace HandoffDapr.Service.Tests.Infrastructure;

/// <summary>What the WireMock-based provider fakes (<see cref="FakeCursor"/>, <see cref="FakeCopilot"/>) share.</summary>
public static class WireMockMessages
{
    /// <summary>The first value of a query parameter, or null when the request has none.</summary>
    public static string? QueryValue(IRequestMessage request, string name) =>
        request.Query is { } query && query.TryGetValue(name, out var values) ? values.FirstOrDefault() : null;

    /// <summary>An answer with a JSON body.</summary>
    public static ResponseMessage Json(int status, string body) => new()
    {
        StatusCode = status,
        Headers = new Dictionary<string, WireMockList<string>> { ["Content-Type"] = new("application/json") },
        BodyData = new BodyData { BodyAsString = body, DetectedBodyType = BodyType.String, Encoding = System.Text.Encoding.UTF8 },
    };
}

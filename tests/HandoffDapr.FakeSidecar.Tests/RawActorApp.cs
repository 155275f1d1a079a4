using System.Collections.Concurrent;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.TestHost;
using Microsoft.Extensions.Logging;

namespace HandoffDapr.FakeSidecar.Tests;

/// <summary>
/// An app that hosts the actor type <c>Raw</c> with plain HTTP handlers, no Dapr SDK: what daprd does on the app
/// channel is seen as it arrives, without the SDK's own per-actor turn lock in between. Method <c>hold</c> (and a
/// reminder named <c>hold</c>) stays inside until <see cref="ReleaseHolds"/>; every call's reply is <see cref="Reply"/> (200, empty, by default).
/// </summary>
public sealed class RawActorApp : IAsyncDisposable
{
    private readonly WebApplication app;
    private readonly object gate = new();
    private readonly Dictionary<string, int> inside = new(StringComparer.Ordinal);
    private readonly TaskCompletionSource holds = new(TaskCreationOptions.RunContinuationsAsynchronously);

    private RawActorApp(WebApplication app) => this.app = app;

    /// <summary>"{id}/{method}" of every call into the actor, in arrival order.</summary>
    public ConcurrentQueue<string> Arrivals { get; } = new();

    /// <summary>The most calls that were inside one actor id at once.</summary>
    public int MaxInsidePerId { get; private set; }

    /// <summary>The reply to a call (id, method); null: 200 with an empty body.</summary>
    public Func<string, string, IResult>? Reply { get; set; }

    public int Inside(string id)
    {
        lock (gate)
        {
            return inside.GetValueOrDefault(id);
        }
    }

    public bool Arrived(string idAndMethod) => Arrivals.Contains(idAndMethod);

    /// <summary>Lets every <c>hold</c> call (now and later) return.</summary>
    public void ReleaseHolds() => holds.TrySetResult();

    public static async Task<RawActorApp> StartAsync(FakeDaprSidecar sidecar)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { EnvironmentName = "Testing" });
        builder.WebHost.UseTestServer();
        builder.Logging.ClearProviders();
        var web = builder.Build();
        var raw = new RawActorApp(web);
        web.MapGet("dapr/config", () => Results.Json(new { entities = new[] { "Raw" } }));
        web.MapPut("actors/Raw/{id}/method/{**method}", async (string id, string method) =>
        {
            lock (raw.gate)
            {
                raw.inside[id] = raw.inside.GetValueOrDefault(id) + 1;
                raw.MaxInsidePerId = Math.Max(raw.MaxInsidePerId, raw.inside[id]);
            }

            raw.Arrivals.Enqueue(id + "/" + method);
            try
            {
                if (method is "hold" or "remind/hold")
                {
                    await raw.holds.Task.WaitAsync(TimeSpan.FromSeconds(30)); // bounded, whatever the test does
                }

                return raw.Reply?.Invoke(id, method) ?? Results.Ok();
            }
            finally
            {
                lock (raw.gate)
                {
                    raw.inside[id]--;
                }
            }
        });
        web.MapDelete("actors/Raw/{id}", (string id) =>
        {
            raw.Arrivals.Enqueue(id + "/DELETE");
            return Results.Ok();
        });
        await web.StartAsync();
        sidecar.AppChannel = web.GetTestServer().CreateHandler();
        return raw;
    }

    public async ValueTask DisposeAsync()
    {
        ReleaseHolds();
        await app.StopAsync();
        await app.DisposeAsync();
    }
}

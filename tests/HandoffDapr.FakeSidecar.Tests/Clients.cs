using Dapr.Client;
using Grpc.Net.Client;

namespace HandoffDapr.FakeSidecar.Tests;

internal static class Clients
{
    /// <summary>A DaprClient on the sidecar's gRPC port (h2c over loopback) or on its in-memory handler.</summary>
    public static DaprClient Dapr(FakeDaprSidecar sidecar, bool inMemory = false, string? apiToken = null)
    {
        var builder = new DaprClientBuilder()
            .UseHttpEndpoint(sidecar.HttpEndpoint.ToString())
            .UseGrpcEndpoint(sidecar.GrpcEndpoint.ToString())
            .UseDaprApiToken(apiToken ?? "");
        if (inMemory)
        {
            builder.UseGrpcChannelOptions(new GrpcChannelOptions { HttpHandler = sidecar.CreateGrpcHandler() });
        }

        return builder.Build();
    }
}

internal static class RichErrors
{
    /// <summary>The google.rpc.ErrorInfo daprd puts in <c>grpc-status-details-bin</c>.</summary>
    public static Google.Rpc.ErrorInfo ErrorInfo(Grpc.Core.RpcException rpc)
    {
        var bin = rpc.Trailers.Single(e => e.Key == "grpc-status-details-bin").ValueBytes;
        var status = Google.Rpc.Status.Parser.ParseFrom(bin);
        Assert.Equal((int)rpc.StatusCode, status.Code);
        return Assert.Single(status.Details).Unpack<Google.Rpc.ErrorInfo>();
    }
}

// Command controller runs Knative Serving's controller (the reconcilers of
// knative.dev/serving v0.50.0 cmd/controller) with knative.dev/pkg's default
// health-probe server turned off.
//
// Why a wrapper: sharedmain serves the probes on a fixed :8080, and the
// autoscaler's websocket stat server is also fixed at :8080, so on one test
// machine the two cannot both run. Nothing else differs from Knative's main:
// the same reconcilers, the same flags (--kubeconfig, --reconciliation-timeout),
// the same environment. The cert-manager controller is left out: the kube tier
// never enables external-domain-tls.
package main

import (
	"flag"

	"knative.dev/pkg/injection"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/reconciler"
	"knative.dev/pkg/signals"
	"knative.dev/serving/pkg/reconciler/configuration"
	"knative.dev/serving/pkg/reconciler/domainmapping"
	"knative.dev/serving/pkg/reconciler/gc"
	"knative.dev/serving/pkg/reconciler/labeler"
	"knative.dev/serving/pkg/reconciler/nscert"
	"knative.dev/serving/pkg/reconciler/revision"
	"knative.dev/serving/pkg/reconciler/route"
	"knative.dev/serving/pkg/reconciler/serverlessservice"
	"knative.dev/serving/pkg/reconciler/service"
)

func main() {
	flag.DurationVar(&reconciler.DefaultTimeout, "reconciliation-timeout", reconciler.DefaultTimeout,
		"The time each reconciliation may take before its context is canceled.")
	ctx := sharedmain.WithHealthProbesDisabled(signals.NewContext())
	cfg := injection.ParseAndGetRESTConfigOrDie()
	sharedmain.MainWithConfig(ctx, "controller", cfg,
		configuration.NewController,
		labeler.NewController,
		revision.NewController,
		route.NewController,
		serverlessservice.NewController,
		service.NewController,
		gc.NewController,
		nscert.NewController,
		domainmapping.NewController,
	)
}

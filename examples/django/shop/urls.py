from django.contrib import admin
from django.urls import path

from notifications import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("devices/", views.register_device, name="register-device"),
    path("orders/<int:order_id>/ship/", views.ship_order, name="ship-order"),
]
